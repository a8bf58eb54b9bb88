//! What to serve: from the command line or an nvmetcli JSON file (`nvmetcli save`),
//! validated into the core's types. Errors name the key that is wrong, as configfs does.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde_json::Value;
use tracing::warn;

pub use crate::core::auth::{DhGroup, HashFunction, HostKeys, Secret};
use crate::core::PortSubsystems;
use crate::error::SetupError;
use crate::wire::ana::AnaState;
use crate::wire::discovery::{SecureChannel, TransportType};

pub const DEFAULT_PORT: u16 = 4420;

/// Where payload buffers come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum P2pMem {
    /// The CMB of the NVMe controller behind a namespace, else any published provider.
    Auto,
    Off,
    /// The provider at this PCI address.
    Device(String),
}

impl std::str::FromStr for P2pMem {
    type Err = String;
    fn from_str(text: &str) -> Result<P2pMem, String> {
        match text {
            "auto" | "1" => Ok(P2pMem::Auto),
            "off" | "0" | "none" => Ok(P2pMem::Off),
            bdf if is_pci_address(bdf) => Ok(P2pMem::Device(bdf.to_owned())),
            other => Err(format!("{other:?}: expected auto, off or a PCI address like 0000:00:04.0")),
        }
    }
}

impl std::fmt::Display for P2pMem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            P2pMem::Auto => f.write_str("auto"),
            P2pMem::Off => f.write_str("off"),
            P2pMem::Device(bdf) => f.write_str(bdf),
        }
    }
}

fn is_pci_address(text: &str) -> bool {
    let parts: Vec<&str> = text.split([':', '.']).collect();
    parts.len() == 4 && parts.iter().all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_hexdigit()))
}

#[derive(Clone, Debug)]
pub struct NamespaceConfig {
    pub id: u32,
    pub path: PathBuf,
    pub uuid: Option<[u8; 16]>,
    pub nguid: Option<[u8; 16]>,
    /// Our extension to the nvmetcli format: per-namespace p2pmem choice.
    pub p2pmem: Option<P2pMem>,
    /// A disabled namespace is configured but not served (nvmetcli's `enable: 0`).
    pub enabled: bool,
    /// Our extension: writes are refused (Namespace is Write Protected).
    pub read_only: bool,
    /// Reservation commands are served (nvmetcli's `resv.enable`; on unless it is 0).
    pub reservations: bool,
    /// Its ANA group (nvmetcli's `ana_grpid`), 1 unless set.
    pub ana_group: u32,
}

impl NamespaceConfig {
    pub fn new(id: u32, path: PathBuf) -> NamespaceConfig {
        NamespaceConfig { id, path, uuid: None, nguid: None, p2pmem: None, enabled: true, read_only: false, reservations: true, ana_group: 1 }
    }

    /// The UUID hosts see: the configured one, else one derived from the subsystem,
    /// NSID and path, the same across restarts.
    pub fn uuid_in(&self, subsystem_nqn: &str) -> [u8; 16] {
        self.uuid.unwrap_or_else(|| as_uuid(stable_id(&self.identity(subsystem_nqn), 1)))
    }

    /// The NGUID hosts see, chosen likewise.
    pub fn nguid_in(&self, subsystem_nqn: &str) -> [u8; 16] {
        self.nguid.unwrap_or_else(|| stable_id(&self.identity(subsystem_nqn), 2))
    }

    fn identity(&self, subsystem_nqn: &str) -> String {
        format!("{}/{}/{}", subsystem_nqn, self.id, self.path.display())
    }
}

#[derive(Clone, Debug)]
pub struct SubsystemConfig {
    pub nqn: String,
    pub serial: Option<String>,
    pub model: Option<String>,
    pub firmware: Option<String>,
    pub ieee_oui: Option<u32>,
    /// CNTLIDs this subsystem's controllers take (`cntlid_min`, `cntlid_max`).
    pub controller_ids: Option<(u16, u16)>,
    pub allow_any_host: bool,
    pub allowed_hosts: Vec<String>,
    pub namespaces: Vec<NamespaceConfig>,
}

impl SubsystemConfig {
    pub fn new(nqn: impl Into<String>) -> SubsystemConfig {
        SubsystemConfig {
            nqn: nqn.into(),
            serial: None,
            model: None,
            firmware: None,
            ieee_oui: None,
            controller_ids: None,
            allow_any_host: false,
            allowed_hosts: Vec::new(),
            namespaces: Vec::new(),
        }
    }

    /// The serial number hosts see: the configured one, else 20 hex digits derived
    /// from the NQN.
    pub fn serial_or_derived(&self) -> String {
        self.serial.clone().unwrap_or_else(|| stable_id(&self.nqn, 3).iter().take(10).map(|b| format!("{b:02x}")).collect())
    }

    pub fn model_or_default(&self) -> String {
        self.model.clone().unwrap_or_else(|| "p2ptgt".into())
    }

    pub fn firmware_or_default(&self) -> String {
        self.firmware.clone().unwrap_or_else(|| env!("CARGO_PKG_VERSION").into()).chars().take(8).collect()
    }

    /// What hosts see of the subsystem itself; a change to any of it needs the
    /// subsystem served anew.
    pub fn identity(&self) -> (String, String, String, u32, (u16, u16)) {
        (self.serial_or_derived(), self.model_or_default(), self.firmware_or_default(), self.ieee_oui.unwrap_or(0), self.controller_ids.unwrap_or((1, 0xFFEF)))
    }
}

/// Checks that `nqn` is an NVMe Qualified Name (NVMe Base 2.0, 4.5): at most 223
/// bytes, printable ASCII without spaces, and either `nqn.yyyy-mm.<reverse domain>`
/// with an optional `:` suffix, or the UUID form.
pub fn check_nqn(nqn: &str) -> Result<(), String> {
    const UUID_PREFIX: &str = "nqn.2014-08.org.nvmexpress:uuid:";
    if nqn.len() > 223 {
        return Err(format!("{nqn:?} is {} bytes; an NQN has at most 223", nqn.len()));
    }
    if !nqn.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!("{nqn:?} has spaces or characters that are not printable ASCII"));
    }
    if let Some(uuid) = nqn.strip_prefix(UUID_PREFIX) {
        return parse_hex16(uuid, "uuid").map(drop).map_err(|_| format!("{nqn:?}: the UUID form needs a UUID after {UUID_PREFIX:?}"));
    }
    let date_and_domain = nqn.strip_prefix("nqn.").unwrap_or("");
    let date = date_and_domain.get(..7).unwrap_or("");
    let domain = date_and_domain.get(8..).unwrap_or("").split(':').next().unwrap_or("");
    let date_ok = date.len() == 7
        && date.bytes().enumerate().all(|(i, b)| if i == 4 { b == b'-' } else { b.is_ascii_digit() })
        && date_and_domain.as_bytes().get(7) == Some(&b'.');
    if !date_ok || domain.is_empty() || domain.starts_with('.') || domain.ends_with('.') {
        return Err(format!("{nqn:?} is not an NQN (nqn.yyyy-mm.reverse.domain[:name], or {UUID_PREFIX}<uuid>)"));
    }
    Ok(())
}
/// A port: an address the target listens on, named by its nvmetcli `portid`, the
/// subsystems it serves and the referrals its discovery log lists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortConfig {
    pub id: u16,
    pub address: SocketAddr,
    pub subsystems: PortSubsystems,
    /// Disabled ones too: they are kept and saved, not served.
    pub referrals: Vec<ReferralConfig>,
}

impl PortConfig {
    /// A port serving every subsystem, without referrals: the command line's model.
    pub fn new(id: u16, address: SocketAddr) -> PortConfig {
        PortConfig { id, address, subsystems: PortSubsystems::All, referrals: Vec::new() }
    }

    /// Whether the port listens where `other` does, under the same ID (what it serves
    /// aside).
    pub fn same_listener(&self, other: &PortConfig) -> bool {
        self.id == other.id && self.address == other.address
    }

    /// The core's referrals: the enabled ones, in order.
    pub fn served_referrals(&self) -> Vec<crate::core::Referral> {
        self.referrals.iter().filter(|r| r.enabled).map(ReferralConfig::to_core).collect()
    }
}

/// A referral to a discovery service elsewhere (nvmetcli's `ports[].referrals[]`, one
/// configfs directory under `ports/N/referrals/`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReferralConfig {
    /// The directory name; unique within its port.
    pub name: String,
    /// `addr.portid`: the PORTID the other discovery service is reached through.
    pub port_id: u16,
    pub transport: TransportType,
    /// `addr.traddr` and `addr.trsvcid`; `addr.adrfam` follows from the address.
    pub address: SocketAddr,
    pub secure_channel: SecureChannel,
    /// Only an enabled referral is listed; nvmet creates one disabled.
    pub enabled: bool,
}

impl ReferralConfig {
    /// Reads a referral as nvmetcli saves one: `name`, the `addr` group of configfs
    /// attributes (strings) and `enable`. Only IP transports are served here.
    fn parse(value: &Value, key: &str) -> Result<ReferralConfig, SetupError> {
        let object = value.as_object().ok_or_else(|| SetupError::config(key, "expected an object"))?;
        if object.contains_key("portid") {
            return Err(SetupError::config(format!("{key}.portid"), "nvmetcli keeps a referral's portid in addr.portid"));
        }
        warn_unknown(key, object, &["name", "addr", "enable"]);
        let name = object.get("name").and_then(Value::as_str).filter(|name| !name.is_empty()).ok_or_else(|| SetupError::config(format!("{key}.name"), "missing"))?;
        let akey = format!("{key}.addr");
        let addr = object.get("addr").and_then(Value::as_object).ok_or_else(|| SetupError::config(&akey, "missing"))?;
        warn_unknown(&akey, addr, &["adrfam", "portid", "traddr", "treq", "trsvcid", "trtype"]);
        let text = |field: &str| addr.get(field).and_then(Value::as_str).ok_or_else(|| SetupError::config(format!("{akey}.{field}"), "missing"));
        let trtype = text("trtype")?;
        let transport = TransportType::from_name(trtype)
            .ok_or_else(|| SetupError::config(format!("{akey}.trtype"), format!("{trtype:?}: a referral names an rdma or tcp discovery service")))?;
        let traddr = text("traddr")?;
        let ip = traddr.parse::<IpAddr>().map_err(|_| SetupError::config(format!("{akey}.traddr"), format!("{traddr:?} is not an IP address")))?;
        if ip.is_unspecified() {
            return Err(SetupError::config(format!("{akey}.traddr"), format!("{traddr} is a wildcard; a referral names an address hosts can dial")));
        }
        if let Some(family) = addr.get("adrfam") {
            let expected = if ip.is_ipv6() { "ipv6" } else { "ipv4" };
            if family.as_str() != Some(expected) {
                return Err(SetupError::config(format!("{akey}.adrfam"), format!("{family} does not match traddr {traddr} ({expected})")));
            }
        }
        let service = text("trsvcid")?;
        let service_port = service.parse::<u16>().ok().filter(|port| *port > 0).ok_or_else(|| SetupError::config(format!("{akey}.trsvcid"), format!("{service:?} is not a port")))?;
        let port_id = number_string(addr.get("portid"), &format!("{akey}.portid"))?.unwrap_or(0);
        let port_id = u16::try_from(port_id).map_err(|_| SetupError::config(format!("{akey}.portid"), format!("{port_id} is outside 0..=65535")))?;
        let secure_channel = match addr.get("treq") {
            None => SecureChannel::NotSpecified,
            Some(treq) => treq
                .as_str()
                .and_then(SecureChannel::from_name)
                .ok_or_else(|| SetupError::config(format!("{akey}.treq"), format!("{treq} is not \"not specified\", \"required\" or \"not required\"")))?,
        };
        let enabled = number_string(object.get("enable"), &format!("{key}.enable"))?.unwrap_or(0) != 0;
        Ok(ReferralConfig { name: name.to_owned(), port_id, transport, address: SocketAddr::new(ip, service_port), secure_channel, enabled })
    }

    fn to_json(&self) -> Value {
        serde_json::json!({
            "name": self.name,
            "addr": {
                "adrfam": if self.address.is_ipv6() { "ipv6" } else { "ipv4" },
                "portid": self.port_id.to_string(),
                "traddr": self.address.ip().to_string(),
                "treq": self.secure_channel.name(),
                "trsvcid": self.address.port().to_string(),
                "trtype": self.transport.name(),
            },
            "enable": u8::from(self.enabled),
        })
    }

    pub fn to_core(&self) -> crate::core::Referral {
        crate::core::Referral {
            port_id: self.port_id,
            transport: self.transport,
            ipv6: self.address.is_ipv6(),
            address: self.address.ip().to_string(),
            service_id: self.address.port().to_string(),
            secure_channel: self.secure_channel,
        }
    }
}

#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// Each serves its own subsystems; the first one's parameters hold for all.
    pub ports: Vec<PortConfig>,
    pub subsystems: Vec<SubsystemConfig>,
    pub in_capsule_data_bytes: Option<u32>,
    pub queue_entries_max: Option<u32>,
    /// MDTS as a power of two of 4 KiB pages (the port's `mdts` parameter).
    pub max_transfer_shift: Option<u8>,
    /// Our extension to the nvmetcli format: `"p2ptgt": {"limits": {...}}`.
    pub limits: LimitOverrides,
    /// ANA group states set per port (nvmetcli's `ana_groups`), by (port ID, group).
    pub ana: BTreeMap<(u16, u32), AnaState>,
    /// DH-HMAC-CHAP settings of the hosts that have a key (nvmetcli's `hosts[].dhchap`).
    pub host_keys: BTreeMap<String, HostKeys>,
}

/// Connection limits set in the config file; each overrides its command-line flag.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LimitOverrides {
    pub connections_max: Option<u32>,
    pub connections_per_peer_max: Option<u32>,
    pub queues_per_host_max: Option<u32>,
    pub controllers_per_host_max: Option<u32>,
    pub connect_timeout_ms: Option<u32>,
    pub response_timeout_ms: Option<u32>,
}

impl LimitOverrides {
    const KEYS: [&'static str; 6] = [
        "connections_max",
        "connections_per_peer_max",
        "queues_per_host_max",
        "controllers_per_host_max",
        "connect_timeout_ms",
        "response_timeout_ms",
    ];

    fn parse(value: Option<&Value>) -> Result<LimitOverrides, SetupError> {
        let Some(value) = value else { return Ok(LimitOverrides::default()) };
        let object = value.as_object().ok_or_else(|| SetupError::config("p2ptgt", "expected an object"))?;
        warn_unknown("p2ptgt", object, &["limits"]);
        let Some(limits) = object.get("limits") else { return Ok(LimitOverrides::default()) };
        let limits = limits.as_object().ok_or_else(|| SetupError::config("p2ptgt.limits", "expected an object"))?;
        warn_unknown("p2ptgt.limits", limits, &Self::KEYS);
        let get = |name: &str| -> Result<Option<u32>, SetupError> {
            let key = format!("p2ptgt.limits.{name}");
            match number_string(limits.get(name), &key)? {
                Some(0) => Err(SetupError::config(key, "must be at least 1")),
                other => Ok(other),
            }
        };
        Ok(LimitOverrides {
            connections_max: get("connections_max")?,
            connections_per_peer_max: get("connections_per_peer_max")?,
            queues_per_host_max: get("queues_per_host_max")?,
            controllers_per_host_max: get("controllers_per_host_max")?,
            connect_timeout_ms: get("connect_timeout_ms")?,
            response_timeout_ms: get("response_timeout_ms")?,
        })
    }

    fn to_json(&self) -> Option<Value> {
        let values = [
            self.connections_max,
            self.connections_per_peer_max,
            self.queues_per_host_max,
            self.controllers_per_host_max,
            self.connect_timeout_ms,
            self.response_timeout_ms,
        ];
        let object: serde_json::Map<String, Value> =
            Self::KEYS.iter().zip(values).filter_map(|(key, value)| value.map(|v| (key.to_string(), Value::from(v)))).collect();
        (!object.is_empty()).then_some(Value::Object(object))
    }

    /// Writes the values set here into `limits`.
    pub fn apply(&self, limits: &mut crate::core::Limits) {
        let count = |value: Option<u32>, field: &mut usize| {
            if let Some(value) = value {
                *field = value as usize;
            }
        };
        count(self.connections_max, &mut limits.connections_max);
        count(self.connections_per_peer_max, &mut limits.connections_per_peer_max);
        count(self.queues_per_host_max, &mut limits.queues_per_host_max);
        count(self.controllers_per_host_max, &mut limits.controllers_per_host_max);
        if let Some(ms) = self.connect_timeout_ms {
            limits.connect_timeout = std::time::Duration::from_millis(u64::from(ms));
        }
        if let Some(ms) = self.response_timeout_ms {
            limits.response_timeout = std::time::Duration::from_millis(u64::from(ms));
        }
    }
}

/// Parses `ADDR[:PORT]`, IPv6 in brackets.
pub fn parse_listen(text: &str) -> Result<SocketAddr, SetupError> {
    if let Ok(address) = text.parse::<SocketAddr>() {
        return Ok(address);
    }
    let trimmed = text.trim_start_matches('[').trim_end_matches(']');
    trimmed
        .parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, DEFAULT_PORT))
        .map_err(|_| SetupError::config("--listen", format!("{text:?} is not ADDR or ADDR:PORT")))
}

/// In-capsule data nvmet's RDMA transport allows at most, and so do we.
pub const IN_CAPSULE_DATA_MAX: u32 = 16384;
/// MDTS range served: 128 KiB (2^5 pages) to 1 MiB (2^8 pages).
pub const MAX_TRANSFER_SHIFTS: std::ops::RangeInclusive<u8> = 5..=8;

/// Reads an nvmetcli JSON file: every rdma port, each serving the subsystems linked to
/// it; `listen` overrides the first port's address.
pub fn load_nvmetcli(path: &Path, listen: Option<SocketAddr>) -> Result<ServeConfig, SetupError> {
    let text = std::fs::read_to_string(path).map_err(|source| SetupError::ReadConfig { path: path.to_owned(), source })?;
    let root: Value = serde_json::from_str(&text).map_err(|e| SetupError::config(path.display().to_string(), format!("not JSON: {e}")))?;
    parse_nvmetcli(&root, listen)
}

pub fn parse_nvmetcli(root: &Value, listen: Option<SocketAddr>) -> Result<ServeConfig, SetupError> {
    let object = root.as_object().ok_or_else(|| SetupError::config("(top level)", "expected an object"))?;
    warn_unknown("(top level)", object, &["hosts", "ports", "subsystems", "discovery", "p2ptgt"]);
    let limits = LimitOverrides::parse(object.get("p2ptgt"))?;
    let ports = array(object.get("ports"), "ports")?;
    let mut addresses: Vec<PortConfig> = Vec::new();
    let mut in_capsule_data_bytes = None;
    let mut queue_entries_max = None;
    let mut max_transfer_shift = None;
    let mut ana = BTreeMap::new();
    for (index, port) in ports.iter().enumerate() {
        let key = format!("ports[{index}]");
        let object = port.as_object().ok_or_else(|| SetupError::config(&key, "expected an object"))?;
        warn_unknown(&key, object, &["portid", "addr", "param", "subsystems", "referrals", "ana_groups"]);
        let addr = port.get("addr").and_then(Value::as_object).ok_or_else(|| SetupError::config(format!("{key}.addr"), "missing"))?;
        warn_unknown(&format!("{key}.addr"), addr, &["adrfam", "traddr", "treq", "trsvcid", "trtype", "tsas"]);
        let trtype = addr.get("trtype").and_then(Value::as_str).unwrap_or("");
        if trtype != "rdma" {
            return Err(SetupError::config(format!("{key}.addr.trtype"), format!("port {} has transport {trtype:?}; p2ptgt serves rdma only", port.get("portid").unwrap_or(&Value::Null))));
        }
        let traddr = addr.get("traddr").and_then(Value::as_str).unwrap_or("0.0.0.0");
        let service = addr.get("trsvcid").and_then(Value::as_str).unwrap_or("4420");
        let port_number = service.parse::<u16>().map_err(|_| SetupError::config(format!("{key}.addr.trsvcid"), format!("{service:?} is not a port")))?;
        let ip = traddr.parse::<IpAddr>().map_err(|_| SetupError::config(format!("{key}.addr.traddr"), format!("{traddr:?} is not an IP address")))?;
        let id = match port.get("portid") {
            None => u16::try_from(index).unwrap_or(u16::MAX).saturating_add(1),
            Some(id) => number_string(Some(id), &format!("{key}.portid"))?
                .and_then(|id| u16::try_from(id).ok())
                .filter(|id| *id > 0)
                .ok_or_else(|| SetupError::config(format!("{key}.portid"), "must be 1..=65535"))?,
        };
        let address = SocketAddr::new(ip, port_number);
        if let Some(other) = addresses.iter().find(|p| p.id == id || p.address == address) {
            return Err(SetupError::config(&key, format!("{} and portid {} at {} are the same port", port_name(port), other.id, other.address)));
        }
        // A port without links still listens and serves its discovery log (nvmet would
        // enable the port only at its first link).
        let subsystems = PortSubsystems::Linked(port_links(port, &key)?);
        addresses.push(PortConfig { id, address, subsystems, referrals: port_referrals(port, &key)? });
        for (index, group) in array(port.get("ana_groups"), &format!("{key}.ana_groups"))?.iter().enumerate() {
            let gkey = format!("{key}.ana_groups[{index}]");
            let grpid = number_string(group.get("grpid"), &format!("{gkey}.grpid"))?.ok_or_else(|| SetupError::config(format!("{gkey}.grpid"), "missing"))?;
            check_ana_group(grpid, &format!("{gkey}.grpid"))?;
            let state = group.get("ana").and_then(|a| a.get("state")).and_then(Value::as_str).unwrap_or("optimized");
            let state = AnaState::from_name(state).ok_or_else(|| SetupError::config(format!("{gkey}.ana.state"), format!("{state:?} is not an ANA state")))?;
            ana.insert((id, grpid), state);
        }
        // The first port's parameters hold for all: they are target-wide here.
        if index > 0 {
            if port.get("param").is_some_and(|param| Some(param) != ports.first().and_then(|first| first.get("param"))) {
                warn!(key = %format!("{key}.param"), "p2ptgt applies the first port's parameters to every port");
            }
            continue;
        }
        if let Some(param) = port.get("param").and_then(Value::as_object) {
            let pkey = format!("{key}.param");
            warn_unknown(&pkey, param, &["inline_data_size", "max_queue_size", "mdts", "pi_enable"]);
            in_capsule_data_bytes = number_string(param.get("inline_data_size"), &format!("{pkey}.inline_data_size"))?.map(|bytes| {
                if bytes > IN_CAPSULE_DATA_MAX {
                    warn!(key = %format!("{pkey}.inline_data_size"), bytes, max = IN_CAPSULE_DATA_MAX, "in-capsule data size lowered to the maximum");
                }
                bytes.min(IN_CAPSULE_DATA_MAX)
            });
            queue_entries_max = number_string(param.get("max_queue_size"), &format!("{pkey}.max_queue_size"))?;
            max_transfer_shift = match number_string(param.get("mdts"), &format!("{pkey}.mdts"))? {
                None | Some(0) => None,
                Some(shift) => Some(
                    u8::try_from(shift)
                        .ok()
                        .filter(|shift| MAX_TRANSFER_SHIFTS.contains(shift))
                        .ok_or_else(|| SetupError::config(format!("{pkey}.mdts"), format!("{shift}: p2ptgt serves MDTS 5 (128 KiB) to 8 (1 MiB)")))?,
                ),
            };
            if number_string(param.get("pi_enable"), &format!("{pkey}.pi_enable"))?.unwrap_or(0) != 0 {
                return Err(SetupError::config(format!("{pkey}.pi_enable"), "protection information is not served"));
            }
        }
    }
    match (addresses.first_mut(), listen) {
        (Some(first), Some(listen)) => first.address = listen,
        // A port from --listen alone serves every subsystem, as on the command line.
        (None, Some(listen)) => addresses.push(PortConfig::new(1, listen)),
        (_, None) => {}
    }
    if addresses.is_empty() {
        return Err(SetupError::config("ports", "no rdma port and no --listen"));
    }
    let mut subsystems = Vec::new();
    for (index, subsystem) in array(object.get("subsystems"), "subsystems")?.iter().enumerate() {
        let key = format!("subsystems[{index}]");
        let parsed = parse_subsystem(subsystem, &key)?;
        if subsystems.iter().any(|s: &SubsystemConfig| s.nqn == parsed.nqn) {
            return Err(SetupError::config(format!("{key}.nqn"), format!("{} appears twice", parsed.nqn)));
        }
        subsystems.push(parsed);
    }
    for (index, port) in addresses.iter().enumerate() {
        let PortSubsystems::Linked(names) = &port.subsystems else { continue };
        if let Some((link, nqn)) = names.iter().enumerate().find(|(_, nqn)| !subsystems.iter().any(|s| &s.nqn == *nqn)) {
            return Err(SetupError::config(format!("ports[{index}].subsystems[{link}]"), format!("no subsystem {nqn} in subsystems")));
        }
    }
    // A subsystem linked to no port stays configured (and saved), and its namespaces
    // open, but no host reaches it: nvmet keeps such a subsystem the same way.
    let unreachable: Vec<&str> = subsystems.iter().map(|s| s.nqn.as_str()).filter(|nqn| !addresses.iter().any(|p| p.subsystems.serves(nqn))).collect();
    if !unreachable.is_empty() {
        warn!(subsystems = %unreachable.join(", "), "linked to no rdma port: configured, but no host can connect to it");
    }
    if unreachable.len() == subsystems.len() {
        warn!("no subsystem on an rdma port: serving discovery only until subsystems are linked");
    }
    let host_keys = parse_host_keys(object.get("hosts"))?;
    Ok(ServeConfig { ports: addresses, subsystems, in_capsule_data_bytes, queue_entries_max, max_transfer_shift, limits, ana, host_keys })
}

/// The `hosts` entries' DH-HMAC-CHAP settings (`dhchap`: `key`, `ctrl_key`, `hash`,
/// `dhgroup`, as `nvmetcli save` writes them; an empty or missing `key` means none).
fn parse_host_keys(hosts: Option<&Value>) -> Result<BTreeMap<String, HostKeys>, SetupError> {
    let mut keys = BTreeMap::new();
    for (index, host) in array(hosts, "hosts")?.iter().enumerate() {
        let key = format!("hosts[{index}]");
        let object = host.as_object().ok_or_else(|| SetupError::config(&key, "expected an object"))?;
        warn_unknown(&key, object, &["nqn", "dhchap"]);
        let nqn = object.get("nqn").and_then(Value::as_str).ok_or_else(|| SetupError::config(format!("{key}.nqn"), "missing"))?;
        let Some(dhchap) = object.get("dhchap") else { continue };
        let dhchap_key = format!("{key}.dhchap");
        let dhchap = dhchap.as_object().ok_or_else(|| SetupError::config(&dhchap_key, "expected an object"))?;
        warn_unknown(&dhchap_key, dhchap, &["key", "ctrl_key", "hash", "dhgroup"]);
        let text = |name: &str| -> Result<Option<&str>, SetupError> {
            match dhchap.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(text)) if text.trim().is_empty() => Ok(None),
                Some(Value::String(text)) => Ok(Some(text.trim())),
                Some(_) => Err(SetupError::config(format!("{dhchap_key}.{name}"), "expected a string")),
            }
        };
        let Some(secret) = text("key")? else { continue };
        let mut host_keys = HostKeys::new(parse_secret(secret, &format!("{dhchap_key}.key"))?);
        if let Some(secret) = text("ctrl_key")? {
            host_keys.controller_key = Some(parse_secret(secret, &format!("{dhchap_key}.ctrl_key"))?);
        }
        if let Some(name) = text("hash")? {
            host_keys.hash = parse_hash(name, &format!("{dhchap_key}.hash"))?;
        }
        if let Some(name) = text("dhgroup")? {
            host_keys.group = parse_group(name, &format!("{dhchap_key}.dhgroup"))?;
        }
        if keys.insert(nqn.to_owned(), host_keys).is_some() {
            return Err(SetupError::config(format!("{key}.nqn"), format!("{nqn} has DH-HMAC-CHAP settings twice")));
        }
    }
    Ok(keys)
}

/// A `DHHC-1:` secret from the config or the command line; the error says what is
/// wrong with it, never what it is.
pub fn parse_secret(text: &str, key: &str) -> Result<Secret, SetupError> {
    Secret::parse(text).map_err(|error| SetupError::config(key, error.to_string()))
}

/// A DH-HMAC-CHAP hash by its configfs name (`hmac(sha256)` ...), for `key`.
pub fn parse_hash(name: &str, key: &str) -> Result<HashFunction, SetupError> {
    HashFunction::from_name(name).ok_or_else(|| SetupError::config(key, format!("{name:?} is not hmac(sha256), hmac(sha384) or hmac(sha512)")))
}

/// A DH group by its configfs name (`null`, `ffdhe2048` ...), for `key`.
pub fn parse_group(name: &str, key: &str) -> Result<DhGroup, SetupError> {
    DhGroup::from_name(name).ok_or_else(|| SetupError::config(key, format!("{name:?} is not null or ffdhe2048 to ffdhe8192")))
}

/// A host's `dhchap` group as `nvmetcli save` writes it.
fn host_keys_json(keys: &HostKeys) -> Value {
    serde_json::json!({
        "key": keys.key.to_text(),
        "ctrl_key": keys.controller_key.as_ref().map_or(String::new(), Secret::to_text),
        "hash": keys.hash.name(),
        "dhgroup": keys.group.name(),
    })
}

/// A port's `subsystems`: the NQNs linked to it, each once.
fn port_links(port: &Value, key: &str) -> Result<Vec<String>, SetupError> {
    let mut linked: Vec<String> = Vec::new();
    for (index, nqn) in array(port.get("subsystems"), &format!("{key}.subsystems"))?.iter().enumerate() {
        let lkey = format!("{key}.subsystems[{index}]");
        let nqn = nqn.as_str().ok_or_else(|| SetupError::config(&lkey, "expected a subsystem NQN"))?;
        if linked.iter().any(|l| l == nqn) {
            return Err(SetupError::config(&lkey, format!("{nqn} is linked to this port twice")));
        }
        linked.push(nqn.to_owned());
    }
    Ok(linked)
}

/// A port's `referrals`, their names unique within the port.
fn port_referrals(port: &Value, key: &str) -> Result<Vec<ReferralConfig>, SetupError> {
    let mut referrals: Vec<ReferralConfig> = Vec::new();
    for (index, referral) in array(port.get("referrals"), &format!("{key}.referrals"))?.iter().enumerate() {
        let rkey = format!("{key}.referrals[{index}]");
        let referral = ReferralConfig::parse(referral, &rkey)?;
        if referrals.iter().any(|r| r.name == referral.name) {
            return Err(SetupError::config(format!("{rkey}.name"), format!("{} names two referrals of this port", referral.name)));
        }
        referrals.push(referral);
    }
    Ok(referrals)
}

/// A port's ANA groups as nvmetcli writes them: group 1 always, then each group with a
/// state set.
fn ana_groups_of(config: &ServeConfig, port_id: u16) -> Vec<Value> {
    let mut groups: BTreeMap<u32, AnaState> = BTreeMap::from([(1, AnaState::default_for(1))]);
    groups.extend(config.ana.iter().filter(|((port, _), _)| *port == port_id).map(|((_, group), state)| (*group, *state)));
    groups.into_iter().map(|(group, state)| serde_json::json!({"grpid": group, "ana": {"state": state.name()}})).collect()
}

/// The configuration as `nvmetcli save` writes it, with every derived value (serial,
/// UUID, NGUID, firmware) spelled out so that another target restores the same
/// identities. `limits` are the port parameters in force.
pub fn to_nvmetcli(config: &ServeConfig, in_capsule_data_bytes: u32, queue_entries_max: u32, max_transfer_shift: u8) -> Value {
    let hex = |bytes: &[u8; 16]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let uuid = |bytes: &[u8; 16]| {
        let h = hex(bytes);
        format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
    };
    let subsystems: Vec<Value> = config
        .subsystems
        .iter()
        .map(|s| {
            let (first, last) = s.controller_ids.unwrap_or((1, 0xFFEF));
            let namespaces: Vec<Value> = s
                .namespaces
                .iter()
                .map(|n| {
                    let mut namespace = serde_json::json!({
                        "nsid": n.id,
                        "enable": u8::from(n.enabled),
                        "ana_grpid": n.ana_group,
                        "device": {"path": n.path.display().to_string(), "uuid": uuid(&n.uuid_in(&s.nqn)), "nguid": uuid(&n.nguid_in(&s.nqn))},
                    });
                    if let Some(p2pmem) = &n.p2pmem {
                        namespace["p2pmem"] = Value::from(p2pmem.to_string());
                    }
                    if n.read_only {
                        namespace["read_only"] = Value::from(1);
                    }
                    namespace["resv"] = serde_json::json!({ "enable": if n.reservations { "1" } else { "0" } });
                    namespace
                })
                .collect();
            serde_json::json!({
                "nqn": s.nqn,
                "allowed_hosts": s.allowed_hosts,
                "attr": {
                    "allow_any_host": if s.allow_any_host { "1" } else { "0" },
                    "serial": s.serial_or_derived(),
                    "model": s.model_or_default(),
                    "firmware": s.firmware_or_default(),
                    "ieee_oui": format!("0x{:06x}", s.ieee_oui.unwrap_or(0)),
                    "cntlid_min": first.to_string(),
                    "cntlid_max": last.to_string(),
                    "pi_enable": "0",
                },
                "namespaces": namespaces,
            })
        })
        .collect();
    let mut hosts: Vec<&String> = config.subsystems.iter().flat_map(|s| &s.allowed_hosts).chain(config.host_keys.keys()).collect();
    hosts.sort();
    hosts.dedup();
    let ports: Vec<Value> = config
        .ports
        .iter()
        .map(|port| {
            let linked: Vec<&str> = config.subsystems.iter().map(|s| s.nqn.as_str()).filter(|nqn| port.subsystems.serves(nqn)).collect();
            let linked: Vec<&str> = match &port.subsystems {
                // Written out: nvmetcli has no "every subsystem".
                PortSubsystems::All => linked,
                PortSubsystems::Linked(names) => names.iter().map(String::as_str).filter(|nqn| linked.contains(nqn)).collect(),
            };
            serde_json::json!({
                "portid": port.id,
                "addr": {
                    "adrfam": if port.address.is_ipv6() { "ipv6" } else { "ipv4" },
                    "traddr": port.address.ip().to_string(),
                    "trsvcid": port.address.port().to_string(),
                    "trtype": "rdma",
                    "treq": "not specified",
                    "tsas": "not specified",
                },
                "param": {
                    "inline_data_size": in_capsule_data_bytes.to_string(),
                    "max_queue_size": queue_entries_max.to_string(),
                    "mdts": max_transfer_shift.to_string(),
                    "pi_enable": "0",
                },
                "referrals": port.referrals.iter().map(ReferralConfig::to_json).collect::<Vec<_>>(),
                "subsystems": linked,
                "ana_groups": ana_groups_of(config, port.id),
            })
        })
        .collect();
    let mut root = serde_json::json!({
        "hosts": hosts
            .iter()
            .map(|nqn| match config.host_keys.get(*nqn) {
                Some(keys) => serde_json::json!({"nqn": nqn, "dhchap": host_keys_json(keys)}),
                None => serde_json::json!({"nqn": nqn}),
            })
            .collect::<Vec<_>>(),
        "ports": ports,
        "subsystems": subsystems,
    });
    if let Some(limits) = config.limits.to_json() {
        root["p2ptgt"] = serde_json::json!({"limits": limits});
    }
    root
}

/// A port as an error names it: its portid and address.
fn port_name(port: &Value) -> String {
    let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("?").to_owned();
    let addr = port.get("addr");
    format!(
        "portid {} at {}:{}",
        port.get("portid").map_or("?".to_owned(), Value::to_string),
        text(addr.and_then(|a| a.get("traddr"))),
        text(addr.and_then(|a| a.get("trsvcid")))
    )
}

/// Subsystem attributes served; others are named in one warning.
const SUBSYSTEM_ATTRIBUTES: [&str; 7] = ["allow_any_host", "serial", "model", "firmware", "ieee_oui", "cntlid_min", "cntlid_max"];
/// Subsystem attributes that change nothing here while they are 0, as p2ptgt reports them.
const SUBSYSTEM_ATTRIBUTES_ZERO: [&str; 3] = ["pi_enable", "vendor_id", "subsys_vendor_id"];

fn parse_subsystem(value: &Value, key: &str) -> Result<SubsystemConfig, SetupError> {
    let object = value.as_object().ok_or_else(|| SetupError::config(key, "expected an object"))?;
    warn_unknown(key, object, &["nqn", "attr", "allowed_hosts", "namespaces", "passthru"]);
    let nqn = object.get("nqn").and_then(Value::as_str).ok_or_else(|| SetupError::config(format!("{key}.nqn"), "missing"))?;
    check_nqn(nqn).map_err(|problem| SetupError::config(format!("{key}.nqn"), problem))?;
    if !array(object.get("passthru"), &format!("{key}.passthru"))?.is_empty() {
        return Err(SetupError::config(format!("{key}.passthru"), format!("subsystem {nqn} is a passthru subsystem; p2ptgt serves namespaces only")));
    }
    let attr = object.get("attr").cloned().unwrap_or(Value::Null);
    let attr_str = |name: &str| attr.get(name).and_then(Value::as_str).map(str::to_owned);
    if let Some(attributes) = attr.as_object() {
        let ignored: Vec<&str> = attributes
            .iter()
            .filter(|(name, value)| {
                let served = SUBSYSTEM_ATTRIBUTES.contains(&name.as_str());
                let zero = SUBSYSTEM_ATTRIBUTES_ZERO.contains(&name.as_str()) && matches!(number_string(Some(value), name), Ok(Some(0)));
                !served && !zero
            })
            .map(|(name, _)| name.as_str())
            .collect();
        if !ignored.is_empty() {
            warn!(key = %format!("{key}.attr"), ignored = %ignored.join(", "), "subsystem attributes not served");
        }
    }
    let allow_any_host = attr_str("allow_any_host").as_deref() == Some("1");
    let ieee_oui = number_string(attr.get("ieee_oui"), &format!("{key}.attr.ieee_oui"))?;
    if ieee_oui.is_some_and(|oui| oui >= 1 << 24) {
        return Err(SetupError::config(format!("{key}.attr.ieee_oui"), "must fit in 24 bits"));
    }
    let cntlid = |name: &str, default: u16| -> Result<u16, SetupError> {
        let key = format!("{key}.attr.{name}");
        match number_string(attr.get(name), &key)? {
            None => Ok(default),
            Some(id) => u16::try_from(id).ok().filter(|id| (1..=0xFFEF).contains(id)).ok_or_else(|| SetupError::config(key, format!("{id} is outside 1..=65519"))),
        }
    };
    let (first, last) = (cntlid("cntlid_min", 1)?, cntlid("cntlid_max", 0xFFEF)?);
    if first > last {
        return Err(SetupError::config(format!("{key}.attr.cntlid_min"), format!("{first} is above cntlid_max {last}")));
    }
    let controller_ids = (attr.get("cntlid_min").is_some() || attr.get("cntlid_max").is_some()).then_some((first, last));
    let allowed_hosts = array(object.get("allowed_hosts"), &format!("{key}.allowed_hosts"))?.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect();
    let mut namespaces = Vec::new();
    for (index, namespace) in array(object.get("namespaces"), &format!("{key}.namespaces"))?.iter().enumerate() {
        let nkey = format!("{key}.namespaces[{index}]");
        let enabled = namespace.get("enable").and_then(Value::as_i64) != Some(0);
        if let Some(object) = namespace.as_object() {
            warn_unknown(&nkey, object, &["nsid", "enable", "device", "p2pmem", "read_only", "ana_grpid", "ana", "resv"]);
        }
        let id = namespace.get("nsid").and_then(Value::as_u64).filter(|&n| n > 0 && n < 0xFFFF_FFFF).ok_or_else(|| SetupError::config(format!("{nkey}.nsid"), "missing or out of range"))?;
        let device = namespace.get("device").ok_or_else(|| SetupError::config(format!("{nkey}.device"), "missing"))?;
        let path = device.get("path").and_then(Value::as_str).ok_or_else(|| SetupError::config(format!("{nkey}.device.path"), "missing"))?;
        let uuid = device.get("uuid").and_then(Value::as_str).map(|u| parse_hex16(u, &format!("{nkey}.device.uuid"))).transpose()?;
        // `nvmetcli save` writes the all-zero NGUID for "none": it is not an identifier.
        let nguid = device.get("nguid").and_then(Value::as_str).map(|u| parse_hex16(u, &format!("{nkey}.device.nguid"))).transpose()?.filter(|nguid| *nguid != [0; 16]);
        let uuid = uuid.filter(|uuid| *uuid != [0; 16]);
        let p2pmem = namespace.get("p2pmem").and_then(Value::as_str).map(|v| v.parse().map_err(|e| SetupError::config(format!("{nkey}.p2pmem"), e))).transpose()?;
        if namespaces.iter().any(|n: &NamespaceConfig| u64::from(n.id) == id) {
            return Err(SetupError::config(format!("{nkey}.nsid"), format!("NSID {id} appears twice")));
        }
        let read_only = number_string(namespace.get("read_only"), &format!("{nkey}.read_only"))?.unwrap_or(0) != 0;
        let reservations = number_string(namespace.get("resv").and_then(|r| r.get("enable")), &format!("{nkey}.resv.enable"))?.unwrap_or(1) != 0;
        let ana_group = number_string(namespace.get("ana_grpid"), &format!("{nkey}.ana_grpid"))?.unwrap_or(1);
        check_ana_group(ana_group, &format!("{nkey}.ana_grpid"))?;
        namespaces.push(NamespaceConfig { id: id as u32, path: PathBuf::from(path), uuid, nguid, p2pmem, enabled, read_only, reservations, ana_group });
    }
    if !namespaces.iter().any(|n| n.enabled) {
        warn!(subsystem = nqn, "subsystem has no enabled namespace");
    }
    Ok(SubsystemConfig {
        nqn: nqn.to_owned(),
        serial: attr_str("serial"),
        model: attr_str("model"),
        firmware: attr_str("firmware"),
        ieee_oui,
        controller_ids,
        allow_any_host,
        allowed_hosts,
        namespaces,
    })
}

/// ANA group IDs are 1..=ANAGRPMAX.
pub fn check_ana_group(group: u32, key: &str) -> Result<(), SetupError> {
    if (1..=crate::wire::ana::GROUPS_MAX).contains(&group) {
        Ok(())
    } else {
        Err(SetupError::config(key, format!("ANA group {group} is outside 1..={}", crate::wire::ana::GROUPS_MAX)))
    }
}

fn array<'a>(value: Option<&'a Value>, key: &str) -> Result<&'a [Value], SetupError> {
    match value {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(SetupError::config(key, "expected a list")),
    }
}

fn number_string(value: Option<&Value>, key: &str) -> Result<Option<u32>, SetupError> {
    match value {
        None => Ok(None),
        // Decimal, or hexadecimal after 0x as configfs writes IDs.
        Some(Value::String(s)) => match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
            Some(hex) => u32::from_str_radix(hex, 16),
            None => s.parse(),
        }
        .map(Some)
        .map_err(|_| SetupError::config(key, format!("{s:?} is not a number"))),
        Some(Value::Number(n)) => n.as_u64().and_then(|n| u32::try_from(n).ok()).map(Some).ok_or_else(|| SetupError::config(key, "out of range")),
        Some(_) => Err(SetupError::config(key, "expected a number")),
    }
}

fn warn_unknown(key: &str, object: &serde_json::Map<String, Value>, known: &[&str]) {
    for name in object.keys().filter(|k| !known.contains(&k.as_str())) {
        warn!(key = %format!("{key}.{name}"), "unknown config key ignored");
    }
}

/// A UUID or NGUID written as 32 hex digits, dashes allowed.
pub fn parse_hex16(text: &str, key: &str) -> Result<[u8; 16], SetupError> {
    let digits: String = text.chars().filter(|c| *c != '-').collect();
    if digits.len() != 32 || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(SetupError::config(key, format!("{text:?} is not 32 hex digits")));
    }
    let mut out = [0u8; 16];
    for (index, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&digits[index * 2..index * 2 + 2], 16).map_err(|_| SetupError::config(key, "bad hex"))?;
    }
    Ok(out)
}

/// A stable 128-bit identifier from text: two FNV-1a 64 hashes. The same subsystem,
/// NSID and path give the same UUID and NGUID across restarts.
pub fn stable_id(text: &str, salt: u64) -> [u8; 16] {
    let fnv = |seed: u64| text.bytes().fold(seed, |hash, b| (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3));
    let high = fnv(0xcbf2_9ce4_8422_2325 ^ salt);
    let low = fnv(0x6c62_272e_07bb_0142 ^ salt.rotate_left(17));
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&high.to_be_bytes());
    out[8..].copy_from_slice(&low.to_be_bytes());
    out
}

/// Marks 16 bytes as an RFC 9562 version 8 (custom) UUID.
pub fn as_uuid(mut bytes: [u8; 16]) -> [u8; 16] {
    bytes[6] = (bytes[6] & 0x0F) | 0x80;
    bytes[8] = (bytes[8] & 0x3F) | 0x80;
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn limits_extension_overrides_and_refuses_zero() {
        let mut sample = nvmetcli_sample();
        sample["p2ptgt"] = json!({"limits": {"connections_per_peer_max": 3, "connect_timeout_ms": "1500"}});
        let config = parse_nvmetcli(&sample, None).unwrap();
        let mut limits = crate::core::Limits::default();
        config.limits.apply(&mut limits);
        assert_eq!(limits.connections_per_peer_max, 3);
        assert_eq!(limits.connect_timeout, std::time::Duration::from_millis(1500));
        assert_eq!(limits.connections_max, crate::core::Limits::default().connections_max);
        sample["p2ptgt"] = json!({"limits": {"queues_per_host_max": 0}});
        assert!(parse_nvmetcli(&sample, None).is_err());
    }

    fn nvmetcli_sample() -> Value {
        json!({
            "hosts": [{"nqn": "nqn.2026-11.io.example:host"}],
            "ports": [{
                "portid": 1,
                "addr": {"adrfam": "ipv4", "traddr": "192.0.2.1", "treq": "not specified", "trsvcid": "4420", "trtype": "rdma", "tsas": "none"},
                "param": {"inline_data_size": "8192", "max_queue_size": "64"},
                "referrals": [],
                "subsystems": ["nqn.2026-11.io.example:sub"]
            }],
            "subsystems": [{
                "nqn": "nqn.2026-11.io.example:sub",
                "attr": {"allow_any_host": "0", "serial": "abc", "model": "Linux", "qid_max": "128"},
                "allowed_hosts": ["nqn.2026-11.io.example:host"],
                "namespaces": [{"nsid": 1, "enable": 1, "device": {"path": "/dev/nvme0n1", "uuid": "12345678-1234-1234-1234-123456789abc", "nguid": "00000000000000000000000000000001"}, "p2pmem": "auto"}]
            }, {"nqn": "nqn.2026-11.io.example:not-on-port", "namespaces": []}]
        })
    }

    #[test]
    fn hosts_dhchap_keys_are_read_checked_and_saved() {
        let host = "nqn.2026-11.io.example:host";
        let key = "DHHC-1:00:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh+KfiaR:";
        let ctrl_key = "DHHC-1:01:bHuByyp0b3RFSx1xQPMVO1HKmUWfzveoahfydpW4fNgSLMVm:";
        let mut sample = nvmetcli_sample();
        sample["hosts"] = json!([{"nqn": host, "dhchap": {"key": key, "ctrl_key": ctrl_key, "hash": "hmac(sha384)", "dhgroup": "ffdhe3072"}}]);
        let config = parse_nvmetcli(&sample, None).unwrap();
        let keys = &config.host_keys[host];
        assert_eq!((keys.hash, keys.group), (HashFunction::Sha384, DhGroup::Ffdhe3072));
        assert_eq!(keys.key, Secret::parse(key).unwrap());
        assert_eq!(keys.controller_key, Some(Secret::parse(ctrl_key).unwrap()));
        let saved = to_nvmetcli(&config, 4096, 128, 5);
        assert_eq!(saved["hosts"][0]["dhchap"], json!({"key": key, "ctrl_key": ctrl_key, "hash": "hmac(sha384)", "dhgroup": "ffdhe3072"}));
        assert_eq!(parse_nvmetcli(&saved, None).unwrap().host_keys, config.host_keys);
        // As nvmetcli saves a host without keys: empty strings mean none.
        sample["hosts"] = json!([{"nqn": host, "dhchap": {"key": "", "ctrl_key": "", "hash": "hmac(sha256)", "dhgroup": "null"}}]);
        assert!(parse_nvmetcli(&sample, None).unwrap().host_keys.is_empty());
        // A bad key, hash or group names the key and never echoes the secret.
        for (field, value, what) in [("key", "DHHC-1:00:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh+KfiaS:", "hosts[0].dhchap.key"), ("hash", "md5", "hosts[0].dhchap.hash"), ("dhgroup", "ffdhe1024", "hosts[0].dhchap.dhgroup")] {
            let mut dhchap = json!({"key": key});
            dhchap[field] = json!(value);
            sample["hosts"] = json!([{"nqn": host, "dhchap": dhchap}]);
            let error = parse_nvmetcli(&sample, None).unwrap_err().to_string();
            assert!(error.contains(what), "{error}");
            assert!(!error.contains("AAECAwQF"), "{error}");
        }
    }

    #[test]
    fn nvmetcli_save_moves_over() {
        let config = parse_nvmetcli(&nvmetcli_sample(), None).unwrap();
        let linked = PortSubsystems::Linked(vec!["nqn.2026-11.io.example:sub".into()]);
        assert_eq!(config.ports, vec![PortConfig { subsystems: linked, ..PortConfig::new(1, "192.0.2.1:4420".parse().unwrap()) }]);
        assert_eq!(config.in_capsule_data_bytes, Some(8192));
        assert_eq!(config.queue_entries_max, Some(64));
        assert_eq!(config.subsystems.len(), 2, "a subsystem linked to no port stays configured");
        let subsystem = &config.subsystems[0];
        assert!(!subsystem.allow_any_host);
        assert_eq!(subsystem.allowed_hosts, vec!["nqn.2026-11.io.example:host".to_string()]);
        assert_eq!(subsystem.serial.as_deref(), Some("abc"));
        let namespace = &subsystem.namespaces[0];
        assert_eq!(namespace.path, PathBuf::from("/dev/nvme0n1"));
        assert_eq!(namespace.uuid.unwrap()[15], 0xbc);
        assert_eq!(namespace.nguid.unwrap()[15], 1);
        assert_eq!(namespace.p2pmem, Some(P2pMem::Auto));
    }

    #[test]
    fn every_rdma_port_is_served_and_saved() {
        let mut sample = nvmetcli_sample();
        let mut second = sample["ports"][0].clone();
        second["portid"] = json!(2);
        second["addr"]["trsvcid"] = json!("4421");
        sample["ports"].as_array_mut().unwrap().push(second.clone());
        let config = parse_nvmetcli(&sample, None).unwrap();
        let addresses: Vec<_> = config.ports.iter().map(|p| (p.id, p.address.to_string())).collect();
        assert_eq!(addresses, vec![(1, "192.0.2.1:4420".to_string()), (2, "192.0.2.1:4421".to_string())]);
        let saved = to_nvmetcli(&config, 4096, 128, 5);
        assert_eq!(saved["ports"][1]["addr"]["trsvcid"], json!("4421"));
        assert_eq!(parse_nvmetcli(&saved, None).unwrap().ports, config.ports);
        let overridden = parse_nvmetcli(&sample, Some("192.0.2.9:4420".parse().unwrap())).unwrap();
        assert_eq!(overridden.ports[0].address.to_string(), "192.0.2.9:4420", "--listen replaces the first port's address");
        second["portid"] = json!(3);
        second["addr"]["trsvcid"] = json!("4420");
        sample["ports"].as_array_mut().unwrap().push(second);
        let error = parse_nvmetcli(&sample, None).unwrap_err().to_string();
        assert!(error.contains("ports[2]") && error.contains("same port"), "{error}");
    }

    /// Two ports, each serving one of the two subsystems.
    fn two_port_sample() -> Value {
        let mut sample = nvmetcli_sample();
        let mut second = sample["ports"][0].clone();
        second["portid"] = json!(2);
        second["addr"]["trsvcid"] = json!("4421");
        second["subsystems"] = json!(["nqn.2026-11.io.example:not-on-port"]);
        sample["ports"].as_array_mut().unwrap().push(second);
        sample
    }

    #[test]
    fn each_port_serves_its_own_subsystems_and_saves_them() {
        let config = parse_nvmetcli(&two_port_sample(), None).unwrap();
        let lists: Vec<_> = config.ports.iter().map(|p| p.subsystems.clone()).collect();
        assert_eq!(
            lists,
            vec![PortSubsystems::Linked(vec!["nqn.2026-11.io.example:sub".into()]), PortSubsystems::Linked(vec!["nqn.2026-11.io.example:not-on-port".into()])]
        );
        let saved = to_nvmetcli(&config, 4096, 128, 5);
        assert_eq!(saved["ports"][0]["subsystems"], json!(["nqn.2026-11.io.example:sub"]));
        assert_eq!(saved["ports"][1]["subsystems"], json!(["nqn.2026-11.io.example:not-on-port"]));
        assert_eq!(parse_nvmetcli(&saved, None).unwrap().ports, config.ports);

        let mut unlinked = two_port_sample();
        unlinked["ports"][1]["subsystems"] = json!([]);
        let config = parse_nvmetcli(&unlinked, None).unwrap();
        assert_eq!(config.subsystems.len(), 2, "configured though no port serves it");
        assert!(!config.ports.iter().any(|p| p.subsystems.serves("nqn.2026-11.io.example:not-on-port")));
        assert_eq!(to_nvmetcli(&config, 4096, 128, 5)["subsystems"][1]["nqn"], json!("nqn.2026-11.io.example:not-on-port"), "and saved");
    }

    #[test]
    fn a_port_links_only_configured_subsystems_once() {
        let mut sample = two_port_sample();
        sample["ports"][1]["subsystems"] = json!(["nqn.2026-11.io.example:sub", "nqn.2026-11.io.example:missing"]);
        let error = parse_nvmetcli(&sample, None).unwrap_err().to_string();
        assert!(error.contains("ports[1].subsystems[1]") && error.contains("no subsystem nqn.2026-11.io.example:missing"), "{error}");
        sample["ports"][1]["subsystems"] = json!(["nqn.2026-11.io.example:sub", "nqn.2026-11.io.example:sub"]);
        let error = parse_nvmetcli(&sample, None).unwrap_err().to_string();
        assert!(error.contains("ports[1].subsystems[1]") && error.contains("twice"), "{error}");
        sample["ports"][1]["subsystems"] = json!([7]);
        assert!(parse_nvmetcli(&sample, None).unwrap_err().to_string().contains("ports[1].subsystems[0]"));
    }

    #[test]
    fn a_port_from_listen_alone_serves_every_subsystem() {
        let mut sample = nvmetcli_sample();
        sample["ports"] = json!([]);
        let config = parse_nvmetcli(&sample, Some("192.0.2.9:4420".parse().unwrap())).unwrap();
        assert_eq!(config.ports, vec![PortConfig::new(1, "192.0.2.9:4420".parse().unwrap())]);
        assert!(config.ports[0].subsystems.serves("nqn.2026-11.io.example:not-on-port"));
        let saved = to_nvmetcli(&config, 4096, 128, 5);
        assert_eq!(saved["ports"][0]["subsystems"], json!(["nqn.2026-11.io.example:sub", "nqn.2026-11.io.example:not-on-port"]), "written out by name");
    }

    fn referrals_sample() -> Value {
        let mut sample = nvmetcli_sample();
        sample["ports"][0]["referrals"] = json!([
            {"name": "rack2", "enable": 1,
             "addr": {"adrfam": "ipv4", "portid": "2", "traddr": "192.0.2.20", "treq": "not specified", "trsvcid": "4420", "trtype": "rdma"}},
            {"name": "tcp6", "enable": 1,
             "addr": {"adrfam": "ipv6", "portid": "0x10", "traddr": "2001:db8::20", "treq": "required", "trsvcid": "8009", "trtype": "tcp"}},
            {"name": "off", "enable": 0,
             "addr": {"adrfam": "ipv4", "portid": "3", "traddr": "192.0.2.30", "treq": "not specified", "trsvcid": "4420", "trtype": "rdma"}}
        ]);
        sample
    }

    #[test]
    fn referrals_are_read_served_when_enabled_and_saved() {
        let config = parse_nvmetcli(&referrals_sample(), None).unwrap();
        let port = &config.ports[0];
        assert_eq!(port.referrals.len(), 3);
        assert_eq!(
            port.referrals[1],
            ReferralConfig {
                name: "tcp6".into(),
                port_id: 16,
                transport: TransportType::Tcp,
                address: "[2001:db8::20]:8009".parse().unwrap(),
                secure_channel: SecureChannel::Required,
                enabled: true,
            }
        );
        let served = port.served_referrals();
        assert_eq!(served.len(), 2, "the disabled one is kept, not served");
        assert_eq!((served[0].port_id, served[0].address.as_str(), served[0].service_id.as_str()), (2, "192.0.2.20", "4420"));
        assert!(served[1].ipv6);
        let saved = to_nvmetcli(&config, 4096, 128, 5);
        assert_eq!(saved["ports"][0]["referrals"][2], referrals_sample()["ports"][0]["referrals"][2], "as nvmetcli writes it");
        assert_eq!(saved["ports"][0]["referrals"][1]["addr"]["portid"], json!("16"));
        assert_eq!(parse_nvmetcli(&saved, None).unwrap().ports, config.ports);
        let mut unset = referrals_sample();
        unset["ports"][0]["referrals"][0].as_object_mut().unwrap().remove("enable");
        assert!(!parse_nvmetcli(&unset, None).unwrap().ports[0].referrals[0].enabled, "nvmet creates a referral disabled");
    }

    #[test]
    fn bad_referrals_are_refused_by_key() {
        // (object under the first referral, field, value, what the error names)
        let cases = [
            ("/addr", "trtype", json!("fc"), "referrals[0].addr.trtype"),
            ("/addr", "traddr", json!("rack2.example"), "referrals[0].addr.traddr"),
            ("/addr", "traddr", json!("0.0.0.0"), "wildcard"),
            ("/addr", "adrfam", json!("ipv6"), "referrals[0].addr.adrfam"),
            ("/addr", "trsvcid", json!("discovery"), "referrals[0].addr.trsvcid"),
            ("/addr", "portid", json!("70000"), "referrals[0].addr.portid"),
            ("/addr", "treq", json!("sometimes"), "referrals[0].addr.treq"),
            ("", "name", json!(""), "referrals[0].name"),
            ("", "name", json!("tcp6"), "two referrals"),
            ("", "enable", json!("yes"), "referrals[0].enable"),
            ("", "portid", json!(2), "addr.portid"),
            ("", "addr", json!({"trtype": "rdma", "trsvcid": "4420"}), "referrals[0].addr.traddr"),
            ("", "addr", json!(null), "referrals[0].addr"),
        ];
        for (object, field, value, expected) in cases {
            let mut sample = referrals_sample();
            let referral = sample.pointer_mut(&format!("/ports/0/referrals/0{object}")).and_then(Value::as_object_mut).unwrap();
            referral.insert(field.to_owned(), value.clone());
            let error = parse_nvmetcli(&sample, None).map(drop).unwrap_err().to_string();
            assert!(error.contains(expected), "{field} {value}: {error}");
        }
    }

    #[test]
    fn resv_enable_turns_reservations_off_and_is_saved() {
        let mut sample = nvmetcli_sample();
        let served = |sample: &Value| parse_nvmetcli(sample, None).unwrap().subsystems[0].namespaces[0].reservations;
        assert!(served(&sample), "on unless the file says otherwise");
        sample["subsystems"][0]["namespaces"][0]["resv"] = json!({"enable": "0"});
        assert!(!served(&sample));
        let saved = to_nvmetcli(&parse_nvmetcli(&sample, None).unwrap(), 4096, 128, 5);
        assert_eq!(saved["subsystems"][0]["namespaces"][0]["resv"], json!({"enable": "0"}));
        sample["subsystems"][0]["namespaces"][0]["resv"] = json!({"enable": "x"});
        assert!(parse_nvmetcli(&sample, None).unwrap_err().to_string().contains("resv.enable"));
    }

    #[test]
    fn a_passthru_subsystem_is_refused_by_name() {
        let mut sample = nvmetcli_sample();
        sample["subsystems"][0]["passthru"] = json!([{"device": {"path": "/dev/nvme1"}, "enable": 1}]);
        let error = parse_nvmetcli(&sample, None).unwrap_err().to_string();
        assert!(error.contains("subsystems[0].passthru") && error.contains("nqn.2026-11.io.example:sub"), "{error}");
    }

    #[test]
    fn port_parameters_are_bounded() {
        let mut sample = nvmetcli_sample();
        sample["ports"][0]["param"] = json!({"inline_data_size": "65536", "mdts": "7"});
        let config = parse_nvmetcli(&sample, None).unwrap();
        assert_eq!(config.in_capsule_data_bytes, Some(IN_CAPSULE_DATA_MAX), "clamped as nvmet clamps it");
        assert_eq!(config.max_transfer_shift, Some(7));
        sample["ports"][0]["param"] = json!({"mdts": "9"});
        assert!(parse_nvmetcli(&sample, None).unwrap_err().to_string().contains("param.mdts"));
        sample["ports"][0]["param"] = json!({"pi_enable": "1"});
        assert!(parse_nvmetcli(&sample, None).unwrap_err().to_string().contains("pi_enable"));
    }

    #[test]
    fn subsystem_attributes_move_over_and_zero_ids_are_none() {
        let mut sample = nvmetcli_sample();
        let attr = &mut sample["subsystems"][0]["attr"];
        attr["firmware"] = json!("6.1.0");
        attr["ieee_oui"] = json!("0x001b21");
        attr["cntlid_min"] = json!("10");
        attr["cntlid_max"] = json!("20");
        sample["subsystems"][0]["namespaces"][0]["device"]["nguid"] = json!("00000000-0000-0000-0000-000000000000");
        let config = parse_nvmetcli(&sample, None).unwrap();
        let subsystem = &config.subsystems[0];
        assert_eq!(subsystem.firmware.as_deref(), Some("6.1.0"));
        assert_eq!(subsystem.ieee_oui, Some(0x001b21));
        assert_eq!(subsystem.controller_ids, Some((10, 20)));
        assert_eq!(subsystem.namespaces[0].nguid, None, "nvmetcli's all-zero NGUID means none");
        sample["subsystems"][0]["attr"]["cntlid_min"] = json!("30");
        assert!(parse_nvmetcli(&sample, None).unwrap_err().to_string().contains("cntlid_min"));
        sample["subsystems"][0]["attr"]["cntlid_min"] = json!("0");
        assert!(parse_nvmetcli(&sample, None).is_err(), "CNTLID 0 is reserved");
    }

    #[test]
    fn tcp_port_is_refused_by_name() {
        let mut sample = nvmetcli_sample();
        sample["ports"][0]["addr"]["trtype"] = json!("tcp");
        let error = parse_nvmetcli(&sample, None).unwrap_err().to_string();
        assert!(error.contains("ports[0].addr.trtype"), "{error}");
        assert!(error.contains("port 1"), "{error}");
    }

    #[test]
    fn names_that_are_not_nqns_are_refused() {
        for good in ["nqn.2014-08.org.nvmexpress:uuid:9e9e9e9e-0000-4000-8000-000000000009", "nqn.2026-11.io.p2ptgt:e2e", "nqn.2026-11.io.p2ptgt"] {
            assert_eq!(check_nqn(good), Ok(()), "{good}");
        }
        for bad in ["testnqn", "nqn.sub", "nqn.26-11.io.x", "nqn.2026-11.", "nqn.2026-11.io x", "nqn.2014-08.org.nvmexpress:uuid:xyz", &format!("nqn.2026-11.io.x:{}", "a".repeat(220))] {
            assert!(check_nqn(bad).is_err(), "{bad} accepted");
        }
        let mut sample = nvmetcli_sample();
        sample["subsystems"][0]["nqn"] = json!("testnqn");
        let error = parse_nvmetcli(&sample, None).unwrap_err().to_string();
        assert!(error.contains("subsystems[0].nqn") && error.contains("not an NQN"), "{error}");
    }

    #[test]
    fn saved_configuration_reads_back_the_same() {
        let mut sample = nvmetcli_sample();
        sample["subsystems"][0]["namespaces"][0]["enable"] = json!(0);
        let config = parse_nvmetcli(&sample, None).unwrap();
        assert!(!config.subsystems[0].namespaces[0].enabled, "a disabled namespace stays configured");
        let saved = to_nvmetcli(&config, 4096, 128, 5);
        let again = parse_nvmetcli(&saved, None).unwrap();
        assert_eq!(to_nvmetcli(&again, 4096, 128, 5), saved);
        let (a, b) = (&config.subsystems[0], &again.subsystems[0]);
        assert_eq!(a.identity(), b.identity(), "derived serial spelled out");
        assert_eq!(a.namespaces[0].uuid_in(&a.nqn), b.namespaces[0].uuid_in(&b.nqn));
        assert_eq!(a.namespaces[0].nguid_in(&a.nqn), b.namespaces[0].nguid_in(&b.nqn));
        assert_eq!(saved["ports"][0]["param"]["mdts"], json!("5"));
    }

    #[test]
    fn bad_values_name_their_key() {
        let mut sample = nvmetcli_sample();
        sample["subsystems"][0]["namespaces"][0]["device"]["uuid"] = json!("xyz");
        assert!(parse_nvmetcli(&sample, None).unwrap_err().to_string().contains("namespaces[0].device.uuid"));
        let mut sample = nvmetcli_sample();
        sample["ports"][0]["addr"]["trsvcid"] = json!("http");
        assert!(parse_nvmetcli(&sample, None).unwrap_err().to_string().contains("trsvcid"));
    }

    #[test]
    fn listen_forms() {
        assert_eq!(parse_listen("192.0.2.1").unwrap(), "192.0.2.1:4420".parse().unwrap());
        assert_eq!(parse_listen("192.0.2.1:4421").unwrap().port(), 4421);
        assert_eq!(parse_listen("[::1]:4420").unwrap().port(), 4420);
        assert!(parse_listen("nope").is_err());
    }

    #[test]
    fn p2pmem_values() {
        assert_eq!("auto".parse::<P2pMem>(), Ok(P2pMem::Auto));
        assert_eq!("off".parse::<P2pMem>(), Ok(P2pMem::Off));
        assert_eq!("0000:00:04.0".parse::<P2pMem>(), Ok(P2pMem::Device("0000:00:04.0".into())));
        assert!("04.0".parse::<P2pMem>().is_err());
    }

    #[test]
    fn stable_ids_are_stable_and_distinct() {
        assert_eq!(stable_id("a", 1), stable_id("a", 1));
        assert_ne!(stable_id("a", 1), stable_id("a", 2));
        assert_ne!(stable_id("a", 1), stable_id("b", 1));
        let uuid = as_uuid(stable_id("x", 0));
        assert_eq!(uuid[6] >> 4, 8);
        assert_eq!(uuid[8] >> 6, 2);
    }
}
