//! Fabrics commands: Connect (admin and I/O queues, dynamic controller model),
//! Property Get/Set (nvmet's fabrics-cmd.c) and Authentication Send/Receive
//! (DH-HMAC-CHAP on the admin queue, nvmet's fabrics-cmd-auth.c).

use std::sync::Arc;
use std::time::Instant;

use tracing::{info, warn};
use zerocopy::FromBytes;

use super::auth::Authenticator;
use super::controller::{Controller, ControllerKind, csts};
use super::context::Context;
use super::outcome::{Inbound, Outcome, Work};
use super::subsystem::{Subsystem, DISCOVERY_NQN};
use crate::wire::auth;
use crate::wire::command::fabrics_type;
use crate::wire::fabrics::{invalid_parameter_location, property, ConnectCommand, ConnectData, PropertyAccess, CONNECT_DATA_BYTES, DYNAMIC_CONTROLLER_ID};
use crate::wire::{DataPointer, RawCommand, Status};

/// NVMe version this controller reports: 2.0.0.
pub const VERSION: u32 = 0x0002_0000;
/// CAP.TO in 500 ms units: 7.5 s, as nvmet.
const READY_TIMEOUT_UNITS: u64 = 15;

pub(crate) fn execute(queue: &Context, command: &RawCommand, data: DataPointer) -> Outcome {
    match command.fabrics_type() {
        fabrics_type::CONNECT => {
            if queue.associated {
                return Outcome::status(Status::COMMAND_SEQUENCE_ERROR.dnr());
            }
            if data.length_bytes() as usize != CONNECT_DATA_BYTES {
                return Outcome::status(Status::SGL_INVALID_DATA.dnr());
            }
            Outcome::Transfer(Work::Inbound(Inbound::Connect))
        }
        fabrics_type::PROPERTY_GET | fabrics_type::PROPERTY_SET => property(queue, command),
        fabrics_type::AUTHENTICATION_SEND => match authentication_command(queue, command, data) {
            Ok(_) => Outcome::Transfer(Work::Inbound(Inbound::AuthenticationSend)),
            Err(status) => Outcome::status(status),
        },
        fabrics_type::AUTHENTICATION_RECEIVE => match authentication_command(queue, command, data) {
            Ok(controller) => authentication_receive(&controller, data.length_bytes() as usize),
            Err(status) => Outcome::status(status),
        },
        _ => Outcome::status(Status::INVALID_OPCODE.dnr()),
    }
}

/// Checks an Authentication Send or Receive: on the admin queue of a controller that
/// asked its host to authenticate, for the DH-HMAC-CHAP protocol (SECP E9h, SPSP 01h
/// 01h), with a transfer or allocation length that is the data pointer's.
fn authentication_command(queue: &Context, command: &RawCommand, data: DataPointer) -> Result<Arc<Controller>, Status> {
    let Some(controller) = queue.controller.cloned() else { return Err(Status::COMMAND_SEQUENCE_ERROR.dnr()) };
    if queue.config.queue_id != 0 || !controller.requires_authentication() {
        return Err(Status::COMMAND_SEQUENCE_ERROR.dnr());
    }
    let fields = auth::AuthCommand::parse(command);
    if fields.check_protocol().is_err() {
        return Err(Status::INVALID_FIELD.dnr());
    }
    let length = fields.length_bytes;
    if length == 0 || length > AUTHENTICATION_MESSAGE_MAX {
        return Err(Status::INVALID_FIELD.dnr());
    }
    if length != data.length_bytes() {
        return Err(Status::SGL_INVALID_DATA.dnr());
    }
    Ok(controller)
}

/// The longest authentication message either way: a Reply with SHA-512 and ffdhe8192
/// is 1168 bytes; the Linux host offers 4096 bytes for what it receives.
const AUTHENTICATION_MESSAGE_MAX: u32 = 8192;

/// An Authentication Send's message is in hand.
pub(crate) fn authentication_send(queue: &Context, bytes: &[u8]) -> Outcome {
    let Some(controller) = queue.controller.cloned() else { return Outcome::status(Status::COMMAND_SEQUENCE_ERROR.dnr()) };
    let is_negotiate = auth::header(bytes).is_some_and(|h| h.auth_type == auth::AUTH_TYPE_COMMON && h.auth_id == auth::NEGOTIATE);
    // A new transaction uses the host's keys as they are now (re-authentication after
    // a key change).
    let keys = if is_negotiate { queue.target.host_keys(&controller.host_nqn) } else { None };
    let sent = controller.with_authentication(|authenticator| {
        if let Some(keys) = keys {
            authenticator.set_keys(keys);
        }
        authenticator.send(bytes)
    });
    if let Some(Err(reason)) = sent {
        warn!(controller = controller.id, host = %controller.host_nqn, reason = reason.describe(), "authentication violated: the controller fails");
        controller.fail();
    }
    Outcome::success(0)
}

/// An Authentication Receive: the next message of the transaction. After a Failure1
/// the controller fails, as nvmet's does.
fn authentication_receive(controller: &Arc<Controller>, allocation: usize) -> Outcome {
    match controller.with_authentication(|authenticator| authenticator.receive(allocation)) {
        Some(Some(received)) => {
            if received.fatal {
                controller.fail();
            }
            Outcome::send(received.message)
        }
        _ => Outcome::status(Status::INVALID_FIELD.dnr()),
    }
}

/// Offset of CNTLID and of the NQNs in Connect data, for Invalid Parameter locations.
const CONTROLLER_ID_OFFSET: u16 = 16;
const SUBSYSTEM_NQN_OFFSET: u16 = 256;
const HOST_NQN_OFFSET: u16 = 512;
/// Offsets of Connect command fields, for Invalid Parameter locations.
const QUEUE_ID_OFFSET: u16 = 42;
const QUEUE_SIZE_OFFSET: u16 = 44;

fn invalid(in_data: bool, offset: u16) -> Outcome {
    Outcome::Complete {
        status: Status::CONNECT_INVALID_PARAMETER.dnr(),
        result: u64::from(invalid_parameter_location(in_data, offset)),
    }
}

/// Connect data is in hand: associate the queue with a new or existing controller.
pub(crate) fn connect(queue: &Context, now: Instant, command: &RawCommand, bytes: &[u8]) -> Outcome {
    let Ok((data, _)) = ConnectData::read_from_prefix(bytes) else {
        return Outcome::status(Status::SGL_INVALID_DATA.dnr());
    };
    let command = ConnectCommand::parse(command);
    if command.record_format != 0 {
        return Outcome::status(Status::CONNECT_FORMAT.dnr());
    }
    if command.queue_id != queue.config.queue_id {
        return invalid(false, QUEUE_ID_OFFSET);
    }
    let limits = &queue.target.limits;
    let entries_max = if command.queue_id == 0 { limits.admin_queue_entries_max } else { limits.io_queue_entries_max };
    if command.queue_entries < 2 || command.queue_entries > entries_max {
        return invalid(false, QUEUE_SIZE_OFFSET);
    }
    let (Ok(subsystem_nqn), Ok(host_nqn)) = (data.subsystem_nqn(), data.host_nqn()) else {
        return invalid(true, SUBSYSTEM_NQN_OFFSET);
    };
    if command.queue_id == 0 {
        connect_admin(queue, now, &command, &data, subsystem_nqn, host_nqn)
    } else {
        connect_io(queue, &command, &data, subsystem_nqn, host_nqn)
    }
}

fn connect_admin(queue: &Context, now: Instant, command: &ConnectCommand, data: &ConnectData, subsystem_nqn: &str, host_nqn: &str) -> Outcome {
    if data.controller_id.get() != DYNAMIC_CONTROLLER_ID {
        return invalid(true, CONTROLLER_ID_OFFSET);
    }
    let target = queue.target.clone();
    let kind = if subsystem_nqn == DISCOVERY_NQN {
        ControllerKind::Discovery
    } else {
        let Some(subsystem) = subsystem_on_port(queue, subsystem_nqn, host_nqn) else {
            return invalid(true, SUBSYSTEM_NQN_OFFSET);
        };
        if !subsystem.allows(host_nqn) {
            warn!(subsystem = subsystem_nqn, host = host_nqn, "host is not allowed to connect to this subsystem");
            return Outcome::status(Status::CONNECT_INVALID_HOST.dnr());
        }
        ControllerKind::Io(subsystem.clone())
    };
    if !target.claim_host_queue(host_nqn) {
        return Outcome::status(Status::CONNECT_CONTROLLER_BUSY.dnr());
    }
    let controller = match target.create_controller(kind, queue.config.port_id, host_nqn, data.host_id, command.keep_alive_timeout_ms, now) {
        Ok(controller) => controller,
        Err(status) => {
            target.release_host_queue(host_nqn);
            return Outcome::status(status);
        }
    };
    // A host with a key authenticates to every subsystem, also to one that allows any
    // host (nvmet skips authentication there), but not to discovery.
    if let (ControllerKind::Io(_), Some(keys)) = (&controller.kind, target.host_keys(host_nqn)) {
        controller.require_authentication(Authenticator::new(keys, host_nqn, subsystem_nqn));
    }
    info!(controller = controller.id, subsystem = subsystem_nqn, host = host_nqn, keep_alive_ms = command.keep_alive_timeout_ms, authentication = controller.requires_authentication(), "controller created");
    let reset_generation = controller.reset_generation();
    Outcome::Connected { controller, reset_generation, disable_sq_flow_control: command.disable_sq_flow_control }
}

fn connect_io(queue: &Context, command: &ConnectCommand, data: &ConnectData, subsystem_nqn: &str, host_nqn: &str) -> Outcome {
    // nvmet finds the subsystem through the queue's port before the controller
    // (`nvmet_ctrl_find_get`): an I/O queue cannot join a controller through a port
    // that does not serve its subsystem.
    if subsystem_nqn != DISCOVERY_NQN && subsystem_on_port(queue, subsystem_nqn, host_nqn).is_none() {
        return invalid(true, SUBSYSTEM_NQN_OFFSET);
    }
    let Some(controller) = queue.target.controller(data.controller_id.get()) else {
        return invalid(true, CONTROLLER_ID_OFFSET);
    };
    if controller.subsystem_nqn() != subsystem_nqn {
        return invalid(true, SUBSYSTEM_NQN_OFFSET);
    }
    if controller.host_nqn != host_nqn {
        return invalid(true, HOST_NQN_OFFSET);
    }
    if controller.is_discovery() || command.queue_id > queue.target.limits.io_queues_max {
        return invalid(false, QUEUE_ID_OFFSET);
    }
    if !controller.is_ready() {
        return Outcome::status(Status::COMMAND_SEQUENCE_ERROR.dnr());
    }
    if !queue.target.claim_host_queue(host_nqn) {
        return Outcome::status(Status::CONNECT_CONTROLLER_BUSY.dnr());
    }
    let Some(generation) = controller.attach_io_queue(command.queue_id) else {
        queue.target.release_host_queue(host_nqn);
        return Outcome::status(Status::COMMAND_SEQUENCE_ERROR.dnr());
    };
    Outcome::Connected { controller, reset_generation: generation, disable_sq_flow_control: command.disable_sq_flow_control }
}

/// Subsystem `nqn` if the port the queue came through serves it. Otherwise it does not
/// exist for this Connect, as for nvmet (`nvmet_find_get_subsys` searches the port's
/// links): the caller answers Connect Invalid Parameters at the SUBNQN field, the same
/// for a subsystem served only elsewhere as for one served nowhere.
fn subsystem_on_port(queue: &Context, nqn: &str, host_nqn: &str) -> Option<Arc<Subsystem>> {
    let port_id = queue.config.port_id;
    let found = queue.target.subsystem_on_port(port_id, nqn);
    if found.is_none() {
        if queue.target.subsystem(nqn).is_some() {
            warn!(subsystem = nqn, host = host_nqn, port = port_id, "connect to a subsystem this port does not serve");
        } else {
            warn!(subsystem = nqn, host = host_nqn, "connect to an unknown subsystem");
        }
    }
    found
}

fn property(queue: &Context, command: &RawCommand) -> Outcome {
    let Some(controller) = queue.controller.cloned() else {
        return Outcome::status(Status::COMMAND_SEQUENCE_ERROR.dnr());
    };
    if queue.config.queue_id != 0 {
        return Outcome::status(Status::INVALID_FIELD.dnr());
    }
    let access = PropertyAccess::parse(command);
    let limits = &queue.target.limits;
    if command.fabrics_type() == fabrics_type::PROPERTY_SET {
        if !controller.is_authenticated() {
            return Outcome::status(Status::AUTHENTICATION_REQUIRED.dnr());
        }
        return match (access.offset, access.eight_bytes) {
            (property::CC, false) => {
                controller.set_configuration(access.value as u32);
                if controller.status() & csts::FATAL != 0 {
                    warn!(controller = controller.id, cc = access.value, "host enabled the controller with an unsupported configuration");
                }
                Outcome::success(0)
            }
            _ => Outcome::status(Status::INVALID_FIELD.dnr()),
        };
    }
    let value = match (access.offset, access.eight_bytes) {
        (property::CAP, true) => capabilities(limits.io_queue_entries_max),
        (property::VS, false) => u64::from(VERSION),
        (property::CC, false) => u64::from(controller.configuration()),
        (property::CSTS, false) => u64::from(controller.status()),
        // CRWMT (bits 15:0) equals CAP.TO: ready comes as fast with media as without.
        (property::CRTO, false) => READY_TIMEOUT_UNITS,
        _ => return Outcome::status(Status::INVALID_FIELD.dnr()),
    };
    Outcome::success(value)
}

/// CAP (NVMe Base 2.0, section 3.1.3.1): MQES, CQR, TO, CSS NVM, CRMS.CRWMS (which a
/// 2.0 controller sets; the ready timeout is then CRTO.CRWMT). MPSMIN = MPSMAX = 4 KiB.
/// A discovery controller reports the I/O queue size too, as nvmet does: the Linux host
/// holds its queue size option against MQES and warns on every discovery otherwise.
fn capabilities(io_queue_entries_max: u32) -> u64 {
    let mqes = u64::from(io_queue_entries_max.saturating_sub(1)).min(0xFFFF);
    let contiguous_queues_required = 1 << 16;
    let nvm_command_set = 1 << 37;
    let ready_with_media = 1 << 59;
    mqes | contiguous_queues_required | READY_TIMEOUT_UNITS << 24 | nvm_command_set | ready_with_media
}
