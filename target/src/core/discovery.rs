//! The discovery controller (nvmet's discovery.c): its admin commands, and its log: the
//! discovery subsystem itself, then every subsystem the asking host may connect to on
//! this port.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use super::admin;
use super::controller::Controller;
use super::context::Context;
use super::outcome::Outcome;
use crate::wire::command::admin as opcode;
use crate::wire::identify::cns;
use crate::wire::log_page::{id as log_id, LogRequest};
use crate::wire::{DataPointer, RawCommand, Status};

use super::subsystem::DISCOVERY_NQN;
use super::target::Target;
use crate::wire::discovery::{encode_log, LogEntry, SubsystemType, ADDRESS_FAMILY_IPV4, ADDRESS_FAMILY_IPV6};

/// Identify Controller, the discovery log, Keep Alive Timer and Asynchronous Event
/// Configuration, Asynchronous Event Requests and Keep Alive; nothing else.
pub(crate) fn execute(queue: &Context, now: Instant, controller: &Arc<Controller>, command: &RawCommand, data: DataPointer) -> Outcome {
    if let Err(status) = admin::check_data_pointer(command, data) {
        return Outcome::status(status);
    }
    match command.opcode {
        opcode::IDENTIFY if command.cdw10.get() as u8 == cns::CONTROLLER => Outcome::send(admin::controller_identity(queue, controller)),
        opcode::IDENTIFY => Outcome::status(Status::INVALID_FIELD.dnr()),
        opcode::GET_LOG_PAGE => match LogRequest::parse(command) {
            Ok(request) if request.log_id == log_id::DISCOVERY => {
                let log = log(queue.target, &controller.host_nqn, queue.config.port_id, queue.config.local_address);
                controller.discovery_log_read(request.retain_event);
                admin::send_log(queue, &request, &log)
            }
            Ok(_) => Outcome::status(Status::INVALID_LOG_PAGE.dnr()),
            Err(status) => Outcome::status(status),
        },
        opcode::SET_FEATURES => admin::set_common_feature(now, controller, command, admin::DISCOVERY_EVENT_NOTICES),
        opcode::GET_FEATURES => admin::get_common_feature(controller, command),
        opcode::ASYNC_EVENT_REQUEST => admin::async_event_request(queue),
        opcode::KEEP_ALIVE => admin::keep_alive(controller, now),
        _ => Outcome::status(Status::INVALID_OPCODE.dnr()),
    }
}

/// The log as a host sees it on port `port_id` (as nvmet, without referrals: the
/// subsystems reachable there). `reached` is the address the host reached the
/// discovery controller at; it replaces a wildcard listen address, which no host
/// could dial. A port removed under the host has no entries.
pub fn log(target: &Target, host_nqn: &str, port_id: u16, reached: Option<IpAddr>) -> Vec<u8> {
    let Some(port) = target.port(port_id) else { return encode_log(target.discovery_generation(), &[]) };
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
    entries.extend(target.subsystems().iter().filter(|s| s.allows(host_nqn)).map(|s| entry(SubsystemType::Nvm, &s.nqn)));
    encode_log(target.discovery_generation(), &entries)
}
