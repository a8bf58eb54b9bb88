//! The discovery controller's log (nvmet's discovery.c): the discovery subsystem itself,
//! then every subsystem the asking host may connect to on this port.

use std::net::IpAddr;

use super::subsystem::{Target, DISCOVERY_NQN};
use crate::wire::discovery::{encode_log, LogEntry, SubsystemType, ADDRESS_FAMILY_IPV4, ADDRESS_FAMILY_IPV6};

/// `reached` is the address the host reached the discovery controller at; it replaces a
/// wildcard listen address, which no host could dial.
pub fn log(target: &Target, host_nqn: &str, reached: Option<IpAddr>) -> Vec<u8> {
    let port = &target.port;
    let address = match (port.address.parse::<IpAddr>(), reached) {
        (Ok(listening), Some(reached)) if listening.is_unspecified() => reached.to_string(),
        _ => port.address.clone(),
    };
    let entry = |subsystem_type, nqn: &str| LogEntry {
        subsystem_type,
        address_family: if port.ipv6 { ADDRESS_FAMILY_IPV6 } else { ADDRESS_FAMILY_IPV4 },
        port_id: port.id,
        admin_queue_entries_max: target.limits.admin_queue_entries_max as u16,
        service_id: port.service_id.clone(),
        subsystem_nqn: nqn.to_owned(),
        address: address.clone(),
    };
    let mut entries = vec![entry(SubsystemType::CurrentDiscovery, DISCOVERY_NQN)];
    entries.extend(target.subsystems.iter().filter(|s| s.allows(host_nqn)).map(|s| entry(SubsystemType::Nvm, &s.nqn)));
    encode_log(target.discovery_generation(), &entries)
}
