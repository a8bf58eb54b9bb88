//! Admin commands of I/O and discovery controllers (nvmet's admin-cmd.c): Identify, Get
//! Log Page, Set/Get Features, Asynchronous Event Request, Keep Alive, Abort.

use std::sync::Arc;
use std::time::Instant;

use super::controller::Controller;
use super::queue::{Outcome, Queue};
use super::subsystem::Subsystem;
use crate::wire::command::{admin as opcode, io as io_opcode};
use crate::wire::identify::{self, cns, ControllerIdentity, ControllerType, NamespaceIdentity, CSI_NVM};
use crate::wire::log_page::{self, id as log_id, HealthCounters, LogRequest};
use crate::wire::{DataPointer, RawCommand, Status};

pub(crate) fn execute(queue: &mut Queue, now: Instant, controller: &Arc<Controller>, command: &RawCommand, data: DataPointer) -> Outcome {
    if matches!(data, DataPointer::InCapsule { .. }) {
        return Outcome::status(Status::INVALID_FIELD.dnr());
    }
    match command.opcode {
        opcode::IDENTIFY => identify(queue, controller, command),
        opcode::GET_LOG_PAGE => get_log_page(queue, controller, command),
        opcode::SET_FEATURES => set_features(queue, now, controller, command),
        opcode::GET_FEATURES => get_features(queue, controller, command),
        opcode::ASYNC_EVENT_REQUEST => {
            if queue.held_event_count() >= usize::from(queue.target.limits.async_events_max) {
                Outcome::status(Status::ASYNC_EVENT_LIMIT.dnr())
            } else {
                Outcome::HoldForEvent
            }
        }
        opcode::KEEP_ALIVE => match controller.keep_alive(now) {
            Ok(()) => Outcome::success(0),
            Err(status) => Outcome::status(status),
        },
        // Dword 0 bit 0 set: the command was not aborted.
        opcode::ABORT if !controller.is_discovery() => Outcome::success(1),
        _ => Outcome::status(Status::INVALID_OPCODE.dnr()),
    }
}

fn identify(queue: &Queue, controller: &Controller, command: &RawCommand) -> Outcome {
    let cdw10 = command.cdw10.get();
    let cns = cdw10 as u8;
    let csi = (command.cdw11.get() >> 24) as u8;
    let namespace_id = command.namespace_id.get();
    let Some(subsystem) = controller.subsystem() else {
        return match cns {
            cns::CONTROLLER => Outcome::send(controller_identity(queue, controller, None)),
            _ => Outcome::status(Status::INVALID_FIELD.dnr()),
        };
    };
    let page = match cns {
        cns::CONTROLLER => return Outcome::send(controller_identity(queue, controller, Some(subsystem))),
        cns::ACTIVE_NAMESPACES | cns::CSI_ACTIVE_NAMESPACES => {
            if cns == cns::CSI_ACTIVE_NAMESPACES && csi != CSI_NVM {
                return Outcome::status(Status::INVALID_FIELD.dnr());
            }
            if namespace_id >= 0xFFFF_FFFE {
                return Outcome::status(Status::INVALID_NAMESPACE.dnr());
            }
            identify::encode_namespace_list(subsystem.namespaces.keys().copied(), namespace_id)
        }
        cns::CSI_CONTROLLER if csi == CSI_NVM => identify::Page::default(),
        cns::NAMESPACE | cns::NAMESPACE_DESCRIPTORS | cns::CSI_NAMESPACE | cns::INDEPENDENT_NAMESPACE => {
            if cns == cns::CSI_NAMESPACE && csi != CSI_NVM {
                return Outcome::status(Status::INVALID_FIELD.dnr());
            }
            let Some(namespace) = subsystem.namespace(namespace_id) else {
                // An allocated but inactive NSID reads as zeros; anything else is invalid.
                return if cns == cns::NAMESPACE && namespace_id != 0 && namespace_id <= namespace_count(subsystem) {
                    Outcome::send(identify::Page::default().0.to_vec())
                } else {
                    Outcome::status(Status::INVALID_NAMESPACE.dnr())
                };
            };
            let identity = NamespaceIdentity {
                size_blocks: namespace.size_blocks(),
                block_size_shift: namespace.backend.block_size_shift(),
                nguid: namespace.nguid,
                uuid: namespace.uuid,
                volatile_write_cache: namespace.backend.volatile_write_cache(),
                ready: true,
            };
            match cns {
                cns::NAMESPACE => identity.encode(),
                cns::NAMESPACE_DESCRIPTORS => identity.encode_descriptors(),
                cns::INDEPENDENT_NAMESPACE => identity.encode_independent(),
                _ => identify::Page::default(),
            }
        }
        _ => return Outcome::status(Status::INVALID_FIELD.dnr()),
    };
    Outcome::send(page.0.to_vec())
}

fn namespace_count(subsystem: &Subsystem) -> u32 {
    subsystem.namespaces.keys().next_back().copied().unwrap_or(0).max(1024)
}

fn controller_identity(queue: &Queue, controller: &Controller, subsystem: Option<&Arc<Subsystem>>) -> Vec<u8> {
    let limits = &queue.target.limits;
    let in_capsule = limits.in_capsule_data_bytes;
    let (serial, model, firmware, nqn) = match subsystem {
        Some(s) => (s.serial.as_str(), s.model.as_str(), s.firmware.as_str(), s.nqn.as_str()),
        None => ("", "p2ptgt discovery", env!("CARGO_PKG_VERSION"), super::subsystem::DISCOVERY_NQN),
    };
    let identity = ControllerIdentity {
        controller_id: controller.id,
        controller_type: if subsystem.is_some() { ControllerType::Io } else { ControllerType::Discovery },
        serial,
        model,
        firmware,
        subsystem_nqn: nqn,
        max_transfer_shift: limits.max_transfer_shift,
        version: super::fabrics::VERSION,
        keep_alive_granularity_100ms: 10,
        max_commands: limits.io_queue_entries_max as u16,
        namespace_count: subsystem.map_or(0, |s| namespace_count(s)),
        volatile_write_cache: subsystem.is_some_and(|s| s.namespaces.values().any(|n| n.backend.volatile_write_cache())),
        command_capsule_units: in_capsule.saturating_add(64) / 16,
        in_capsule_data: in_capsule > 0,
        async_event_limit: limits.async_events_max,
    };
    let mut page = identity.encode();
    if identity.volatile_write_cache {
        // VWC bits 2:1 = 10b: Flush does not take the broadcast NSID.
        page.u8(525, 1 | 2 << 1);
    }
    page.0.to_vec()
}

fn get_log_page(queue: &Queue, controller: &Controller, command: &RawCommand) -> Outcome {
    let request = match LogRequest::parse(command) {
        Ok(request) => request,
        Err(status) => return Outcome::status(status),
    };
    let log = if controller.is_discovery() {
        if request.log_id != log_id::DISCOVERY {
            return Outcome::status(Status::INVALID_LOG_PAGE.dnr());
        }
        super::discovery::log(&queue.target, &controller.host_nqn)
    } else {
        match request.log_id {
            log_id::SUPPORTED => log_page::supported_logs(&[0, 1, 2, 3, 4, 5]),
            log_id::ERROR => vec![0u8; 64],
            log_id::SMART => smart(controller, command.namespace_id.get()),
            log_id::FIRMWARE_SLOT => log_page::firmware_slot_log(controller.subsystem().map_or("", |s| s.firmware.as_str())),
            log_id::CHANGED_NAMESPACES => log_page::changed_namespaces_log(&controller.changed_namespaces(request.retain_event)),
            log_id::COMMAND_EFFECTS => log_page::command_effects_log(
                &[opcode::GET_LOG_PAGE, opcode::IDENTIFY, opcode::ABORT, opcode::SET_FEATURES, opcode::GET_FEATURES, opcode::ASYNC_EVENT_REQUEST, opcode::KEEP_ALIVE],
                &[(io_opcode::FLUSH, false), (io_opcode::WRITE, true), (io_opcode::READ, false), (io_opcode::WRITE_ZEROES, true), (io_opcode::DATASET_MANAGEMENT, true)],
            ),
            _ => return Outcome::status(Status::INVALID_LOG_PAGE.dnr()),
        }
    };
    match request.window(&log) {
        Ok(window) => {
            // Bytes asked for past the log's end read as zeroes (bounded by MDTS; the
            // data pointer bounds the transfer itself).
            let asked = request.length_bytes.min(u64::from(queue.target.limits.max_transfer_bytes()));
            let mut reply = window.to_vec();
            reply.resize(reply.len().max(usize::try_from(asked).unwrap_or(0)), 0);
            Outcome::send(reply)
        }
        Err(status) => Outcome::status(status),
    }
}

fn smart(controller: &Controller, namespace_id: u32) -> Vec<u8> {
    let mut counters = HealthCounters::default();
    if let Some(subsystem) = controller.subsystem() {
        for namespace in subsystem.namespaces.values().filter(|n| namespace_id == u32::MAX || n.id == namespace_id) {
            counters.bytes_read = counters.bytes_read.saturating_add(namespace.stats.read_bytes.get());
            counters.bytes_written = counters.bytes_written.saturating_add(namespace.stats.write_bytes.get());
            counters.read_commands = counters.read_commands.saturating_add(namespace.stats.read_commands.get());
            counters.write_commands = counters.write_commands.saturating_add(namespace.stats.write_commands.get());
        }
    }
    log_page::smart_log(&counters)
}

/// Feature identifiers (NVMe Base 2.0, Figure 317).
mod feature {
    pub const VOLATILE_WRITE_CACHE: u8 = 0x06;
    pub const NUMBER_OF_QUEUES: u8 = 0x07;
    pub const ASYNC_EVENT_CONFIGURATION: u8 = 0x0B;
    pub const KEEP_ALIVE_TIMER: u8 = 0x0F;
    pub const HOST_IDENTIFIER: u8 = 0x81;
}

fn set_features(queue: &Queue, now: Instant, controller: &Controller, command: &RawCommand) -> Outcome {
    let cdw10 = command.cdw10.get();
    let value = command.cdw11.get();
    if cdw10 & (1 << 31) != 0 {
        return Outcome::status(Status::FEATURE_NOT_SAVEABLE.dnr());
    }
    let discovery = controller.is_discovery();
    match cdw10 as u8 {
        feature::NUMBER_OF_QUEUES if !discovery => {
            let (submission, completion) = (value & 0xFFFF, value >> 16);
            if submission == 0xFFFF || completion == 0xFFFF {
                return Outcome::status(Status::INVALID_FIELD.dnr());
            }
            let granted = submission.max(completion).min(u32::from(queue.target.limits.io_queues_max).saturating_sub(1));
            Outcome::success(u64::from(granted | granted << 16))
        }
        feature::ASYNC_EVENT_CONFIGURATION => {
            controller.set_async_event_configuration(value);
            Outcome::success(0)
        }
        feature::KEEP_ALIVE_TIMER => {
            controller.set_keep_alive_ms(value, now);
            Outcome::success(0)
        }
        feature::VOLATILE_WRITE_CACHE if !discovery => {
            controller.set_write_cache_enabled(value & 1 != 0);
            Outcome::success(0)
        }
        feature::HOST_IDENTIFIER if !discovery => Outcome::status(Status::COMMAND_SEQUENCE_ERROR.dnr()),
        _ => Outcome::status(Status::INVALID_FIELD.dnr()),
    }
}

fn get_features(queue: &Queue, controller: &Controller, command: &RawCommand) -> Outcome {
    let cdw10 = command.cdw10.get();
    let select = (cdw10 >> 8) & 7;
    let discovery = controller.is_discovery();
    let fid = cdw10 as u8;
    if select == 3 {
        // Supported capabilities: changeable (bit 2), not saveable, not per namespace.
        return match fid {
            feature::ASYNC_EVENT_CONFIGURATION | feature::KEEP_ALIVE_TIMER => Outcome::success(1 << 2),
            feature::NUMBER_OF_QUEUES | feature::VOLATILE_WRITE_CACHE if !discovery => Outcome::success(1 << 2),
            _ => Outcome::status(Status::INVALID_FIELD.dnr()),
        };
    }
    match fid {
        feature::NUMBER_OF_QUEUES if !discovery => {
            let n = u64::from(queue.target.limits.io_queues_max.saturating_sub(1));
            Outcome::success(n | n << 16)
        }
        feature::ASYNC_EVENT_CONFIGURATION => Outcome::success(u64::from(controller.async_event_configuration())),
        feature::KEEP_ALIVE_TIMER => Outcome::success(u64::from(controller.keep_alive_ms())),
        feature::VOLATILE_WRITE_CACHE if !discovery => Outcome::success(u64::from(controller.write_cache_enabled())),
        feature::HOST_IDENTIFIER if !discovery => {
            // Only the 128-bit identifier exists on fabrics: EXHID must be set.
            if command.cdw11.get() & 1 == 0 {
                return Outcome::status(Status::INVALID_FIELD.dnr());
            }
            Outcome::send(controller.host_id.to_vec())
        }
        _ => Outcome::status(Status::INVALID_FIELD.dnr()),
    }
}
