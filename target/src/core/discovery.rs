//! The discovery controller (nvmet's discovery.c): its admin commands, and its log: the
//! discovery subsystem itself, every subsystem the asking host may connect to on this
//! port, then the port's referrals to other discovery services.

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

use super::port::Referral;
use super::subsystem::DISCOVERY_NQN;
use super::target::Target;
use crate::wire::discovery::{encode_log, LogEntry, SubsystemType, TransportType, ADDRESS_FAMILY_IPV4, ADDRESS_FAMILY_IPV6, TREQ_DISABLE_SQ_FLOW_CONTROL};

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

/// ASQSZ of a referral entry: the other discovery service's admin queue size is not
/// known here, so the size every fabrics controller takes at least (NVME_AQ_DEPTH, what
/// nvmet reports in every entry).
const REFERRAL_ADMIN_QUEUE_ENTRIES: u16 = 32;

/// The log as a host sees it on port `port_id`, as nvmet builds it: the discovery
/// subsystem itself, the subsystems the port serves that the host may connect to, then
/// the port's referrals. `reached` is the address the host reached the discovery
/// controller at; it replaces a wildcard listen address, which no host could dial. A
/// port removed under the host has no entries.
pub fn log(target: &Target, host_nqn: &str, port_id: u16, reached: Option<IpAddr>) -> Vec<u8> {
    let Some(port) = target.port(port_id) else { return encode_log(target.discovery_generation(), &[]) };
    let address = match (port.address.parse::<IpAddr>(), reached) {
        (Ok(listening), Some(reached)) if listening.is_unspecified() => reached.to_string(),
        _ => port.address.clone(),
    };
    let entry = |subsystem_type, nqn: &str| LogEntry {
        transport: TransportType::Rdma,
        transport_requirements: TREQ_DISABLE_SQ_FLOW_CONTROL,
        subsystem_type,
        address_family: address_family(port.ipv6),
        port_id: port.id,
        admin_queue_entries_max: target.limits.admin_queue_entries_max as u16,
        service_id: port.service_id.clone(),
        subsystem_nqn: nqn.to_owned(),
        address: address.clone(),
    };
    let mut entries = vec![entry(SubsystemType::CurrentDiscovery, DISCOVERY_NQN)];
    let served = port.subsystems.select(&target.subsystems());
    entries.extend(served.iter().filter(|s| s.allows(host_nqn)).map(|s| entry(SubsystemType::Nvm, &s.nqn)));
    entries.extend(port.referrals.iter().map(referral_entry));
    encode_log(target.discovery_generation(), &entries)
}

/// A referral's entry, from the referral's own address (nvmet formats it from the
/// referral's port, never the one the host reached): TREQ is its configured secure
/// channel requirement alone, and the NQN the well-known discovery NQN.
fn referral_entry(referral: &Referral) -> LogEntry {
    LogEntry {
        transport: referral.transport,
        transport_requirements: referral.secure_channel as u8,
        subsystem_type: SubsystemType::Referral,
        address_family: address_family(referral.ipv6),
        port_id: referral.port_id,
        admin_queue_entries_max: REFERRAL_ADMIN_QUEUE_ENTRIES,
        service_id: referral.service_id.clone(),
        subsystem_nqn: DISCOVERY_NQN.to_owned(),
        address: referral.address.clone(),
    }
}

fn address_family(ipv6: bool) -> u8 {
    if ipv6 {
        ADDRESS_FAMILY_IPV6
    } else {
        ADDRESS_FAMILY_IPV4
    }
}
