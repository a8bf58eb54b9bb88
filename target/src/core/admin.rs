//! Admin commands of I/O controllers (nvmet's admin-cmd.c): Identify, Get Log Page,
//! Set/Get Features, Asynchronous Event Request, Keep Alive, Abort. A discovery
//! controller has its own, smaller dispatch (`discovery.rs`) over the pieces here.

use std::sync::Arc;
use std::time::Instant;

use super::controller::{Controller, Settings};
use super::context::Context;
use super::outcome::Outcome;
use super::subsystem::{Namespace, Subsystem};
use crate::wire::command::{admin as opcode, io as io_opcode, COMMAND_BYTES};
use crate::wire::feature::{self, FeatureId, Select};
use crate::wire::identify::{self, cns, ControllerIdentity, ControllerType, NamespaceIdentity, CSI_NVM};
use crate::wire::log_page::{self, id as log_id, HealthCounters, LogRequest};
use crate::wire::ana;
use crate::wire::reservation;
use crate::wire::{DataPointer, RawCommand, Status};

pub(crate) fn execute(queue: &Context, now: Instant, controller: &Arc<Controller>, command: &RawCommand, data: DataPointer) -> Outcome {
    if let Err(status) = check_data_pointer(command, data) {
        return Outcome::status(status);
    }
    match command.opcode {
        opcode::IDENTIFY => identify(queue, controller, command),
        opcode::GET_LOG_PAGE => get_log_page(queue, now, controller, command),
        opcode::SET_FEATURES => set_features(queue, now, controller, command),
        opcode::GET_FEATURES => get_features(queue, controller, command),
        opcode::ASYNC_EVENT_REQUEST => async_event_request(queue),
        opcode::KEEP_ALIVE => keep_alive(controller, now),
        // Dword 0 bit 0 set: the command was not aborted.
        opcode::ABORT => Outcome::success(1),
        _ => Outcome::status(Status::INVALID_OPCODE.dnr()),
    }
}

/// Admin commands take no in-capsule data, and the data pointer must describe exactly
/// what the command moves (nvmet checks the same): a short buffer is refused, not
/// filled with a truncated structure.
pub(super) fn check_data_pointer(command: &RawCommand, data: DataPointer) -> Result<(), Status> {
    if matches!(data, DataPointer::InCapsule { .. }) {
        return Err(Status::INVALID_FIELD.dnr());
    }
    match expected_data_bytes(command) {
        Some(expected) if u64::from(data.length_bytes()) != expected => Err(Status::SGL_INVALID_DATA.dnr()),
        _ => Ok(()),
    }
}

pub(super) fn async_event_request(queue: &Context) -> Outcome {
    if queue.held_events >= usize::from(queue.target.limits.async_events_max) {
        Outcome::status(Status::ASYNC_EVENT_LIMIT.dnr())
    } else {
        Outcome::HoldForEvent
    }
}

pub(super) fn keep_alive(controller: &Controller, now: Instant) -> Outcome {
    match controller.keep_alive(now) {
        Ok(()) => Outcome::success(0),
        Err(status) => Outcome::status(status),
    }
}

/// Bytes the data pointer of an admin command must describe; `None` for an opcode
/// this controller does not know (it fails as such).
fn expected_data_bytes(command: &RawCommand) -> Option<u64> {
    match command.opcode {
        opcode::IDENTIFY => Some(identify::IDENTIFY_BYTES as u64),
        opcode::GET_LOG_PAGE => LogRequest::parse(command).ok().map(|request| request.length_bytes),
        opcode::GET_FEATURES if feature::feature_id(command) == FeatureId::HostIdentifier => Some(16),
        opcode::GET_FEATURES | opcode::SET_FEATURES | opcode::ASYNC_EVENT_REQUEST | opcode::KEEP_ALIVE | opcode::ABORT => Some(0),
        _ => None,
    }
}

fn identify(queue: &Context, controller: &Controller, command: &RawCommand) -> Outcome {
    let cdw10 = command.cdw10.get();
    let cns = cdw10 as u8;
    let csi = (command.cdw11.get() >> 24) as u8;
    let namespace_id = command.namespace_id.get();
    let Some(subsystem) = controller.subsystem() else {
        return Outcome::status(Status::INVALID_FIELD.dnr());
    };
    let page = match cns {
        cns::CONTROLLER => return Outcome::send(controller_identity(queue, controller)),
        cns::ACTIVE_NAMESPACES | cns::CSI_ACTIVE_NAMESPACES => {
            if cns == cns::CSI_ACTIVE_NAMESPACES && csi != CSI_NVM {
                return Outcome::status(Status::INVALID_FIELD.dnr());
            }
            if namespace_id >= 0xFFFF_FFFE {
                return Outcome::status(Status::INVALID_NAMESPACE.dnr());
            }
            identify::encode_namespace_list(subsystem.namespaces().keys().copied(), namespace_id)
        }
        cns::CSI_CONTROLLER if csi == CSI_NVM => identify::encode_nvm_controller(queue.target.limits.max_transfer_shift),
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
                deallocated_reads_zeroes: namespace.backend.deallocated_reads_zeroes(),
                transfer_blocks_max: super::io::copy_range_blocks_max(queue.target.limits.max_transfer_bytes(), namespace.backend.block_size_shift()),
                copy_ranges_max: super::io::COPY_RANGES_MAX,
                ready: true,
                write_protected: namespace.is_read_only(),
                reservation_capabilities: if namespace.reservations_enabled { reservation_capabilities(queue) } else { 0 },
                ana_group: namespace.ana_group,
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

/// RESCAP: all six types, IEKEY as 1.3 defines it; Persist Through Power Loss when
/// there is a store for it.
fn reservation_capabilities(queue: &Context) -> u8 {
    let persist = if queue.target.reservation_store().is_some() { reservation::RESCAP_PERSIST_THROUGH_POWER_LOSS } else { 0 };
    reservation::RESCAP_TYPES | reservation::RESCAP_IGNORE_EXISTING_KEY_1_3 | persist
}

fn namespace_count(subsystem: &Subsystem) -> u32 {
    subsystem.namespaces().keys().next_back().copied().unwrap_or(0).max(1024)
}

pub(super) fn controller_identity(queue: &Context, controller: &Controller) -> Vec<u8> {
    let subsystem = controller.subsystem();
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
        volatile_write_cache: has_write_cache(controller),
        command_capsule_units: in_capsule.saturating_add(COMMAND_BYTES as u32) / 16,
        in_capsule_data: in_capsule > 0,
        async_event_limit: limits.async_events_max,
        error_log_entries: (super::controller::ERROR_LOG_ENTRIES - 1) as u8,
        async_event_notices: if subsystem.is_some() { ASYNC_EVENT_NOTICES } else { DISCOVERY_EVENT_NOTICES },
        ieee_oui: subsystem.map_or(0, |s| s.ieee_oui),
    };
    identity.encode().0.to_vec()
}

/// Notices (OAES) an I/O controller raises: namespaces come, go and change size while
/// hosts are connected, and ANA group states change.
pub(super) const ASYNC_EVENT_NOTICES: u32 = identify::OAES_NAMESPACE_ATTRIBUTE | identify::OAES_ANA_CHANGE;
/// Notices a discovery controller raises: subsystems and host lists change too.
pub(super) const DISCOVERY_EVENT_NOTICES: u32 = identify::OAES_DISCOVERY_CHANGE;

fn get_log_page(queue: &Context, now: Instant, controller: &Controller, command: &RawCommand) -> Outcome {
    let request = match LogRequest::parse(command) {
        Ok(request) => request,
        Err(status) => return Outcome::status(status),
    };
    let log = match request.log_id {
            log_id::SUPPORTED => log_page::supported_logs(&[0, 1, 2, 3, 4, 5, log_id::ANA, log_id::RESERVATION_NOTIFICATION]),
            log_id::ERROR => controller.error_log(),
            log_id::SMART => match smart(controller, command.namespace_id.get(), now.saturating_duration_since(queue.target.started)) {
                Some(log) => log,
                None => return Outcome::status(Status::INVALID_NAMESPACE.dnr()),
            },
            log_id::FIRMWARE_SLOT => log_page::firmware_slot_log(controller.subsystem().map_or("", |s| s.firmware.as_str())),
            log_id::CHANGED_NAMESPACES => log_page::changed_namespaces_log(&controller.changed_namespaces(request.retain_event)),
            log_id::COMMAND_EFFECTS => log_page::command_effects_log(
                &[opcode::GET_LOG_PAGE, opcode::IDENTIFY, opcode::ABORT, opcode::SET_FEATURES, opcode::GET_FEATURES, opcode::ASYNC_EVENT_REQUEST, opcode::KEEP_ALIVE],
                &[
                    (io_opcode::FLUSH, false),
                    (io_opcode::WRITE, true),
                    (io_opcode::READ, false),
                    (io_opcode::COMPARE, false),
                    (io_opcode::WRITE_ZEROES, true),
                    (io_opcode::DATASET_MANAGEMENT, true),
                    (io_opcode::VERIFY, false),
                    (io_opcode::COPY, true),
                    (io_opcode::RESERVATION_REGISTER, false),
                    (io_opcode::RESERVATION_REPORT, false),
                    (io_opcode::RESERVATION_ACQUIRE, false),
                    (io_opcode::RESERVATION_RELEASE, false),
                ],
            ),
            log_id::RESERVATION_NOTIFICATION => controller.reservation_log(request.retain_event),
            log_id::ANA => match controller.subsystem() {
                Some(subsystem) => {
                    // LSP bit 0 (RGO): the groups without their NSIDs.
                    let groups_only = (command.cdw10.get() >> 8) & 1 != 0;
                    let namespaces = subsystem.namespaces();
                    let groups: Vec<ana::GroupDescriptor> = queue
                        .target
                        .ana_groups(subsystem)
                        .into_iter()
                        .map(|group| ana::GroupDescriptor {
                            group,
                            state: queue.target.ana_state(controller.port_id, group),
                            namespaces: namespaces.values().filter(|n| n.ana_group == group).map(|n| n.id).collect(),
                        })
                        .collect();
                    controller.ana_log_read(request.retain_event);
                    ana::encode_log(queue.target.ana_change_count(), &groups, groups_only)
                }
                None => return Outcome::status(Status::INVALID_LOG_PAGE.dnr()),
            },
            _ => return Outcome::status(Status::INVALID_LOG_PAGE.dnr()),
    };
    send_log(queue, &request, &log)
}

/// The part of `log` a Get Log Page asked for.
pub(super) fn send_log(queue: &Context, request: &LogRequest, log: &[u8]) -> Outcome {
    match request.window(log) {
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

/// The SMART / Health log of one namespace, or of the whole controller for NSID 0 or
/// FFFFFFFFh; `None` for an NSID that names no namespace.
fn smart(controller: &Controller, namespace_id: u32, powered_on: std::time::Duration) -> Option<Vec<u8>> {
    let mut counters = HealthCounters { error_log_entries: controller.error_count(), power_on_hours: powered_on.as_secs() / 3600, ..HealthCounters::default() };
    let whole_controller = namespace_id == 0 || namespace_id == u32::MAX;
    if let Some(subsystem) = controller.subsystem() {
        if !whole_controller && subsystem.namespace(namespace_id).is_none() {
            return None;
        }
        for namespace in subsystem.namespaces().values().filter(|n| whole_controller || n.id == namespace_id) {
            counters.bytes_read = counters.bytes_read.saturating_add(namespace.stats.read_bytes.get());
            counters.bytes_written = counters.bytes_written.saturating_add(namespace.stats.write_bytes.get());
            counters.read_commands = counters.read_commands.saturating_add(namespace.stats.read_commands.get());
            counters.write_commands = counters.write_commands.saturating_add(namespace.stats.write_commands.get());
        }
    }
    Some(log_page::smart_log(&counters))
}

/// Temperature Threshold: TMPSEL 0h (composite) and Fh (all sensors) are the
/// composite temperature, the only one the SMART log reports.
fn temperature_threshold_index(cdw11: u32) -> Option<usize> {
    let sensor = (cdw11 >> 16) & 0xF;
    let kind = (cdw11 >> 20) & 3;
    (matches!(sensor, 0 | 0xF) && kind < 2).then_some(kind as usize)
}

/// Whether the controller has a volatile write cache to turn on and off (feature 06h).
fn has_write_cache(controller: &Controller) -> bool {
    controller.subsystem().is_some_and(|s| s.namespaces().values().any(|n| n.backend.volatile_write_cache()))
}

fn set_features(queue: &Context, now: Instant, controller: &Controller, command: &RawCommand) -> Outcome {
    let value = command.cdw11.get();
    let invalid = Outcome::status(Status::INVALID_FIELD.dnr());
    if feature::save(command) {
        return Outcome::status(Status::FEATURE_NOT_SAVEABLE.dnr());
    }
    match feature::feature_id(command) {
        FeatureId::Arbitration => {
            controller.change_settings(|settings| settings.arbitration = value);
            Outcome::success(0)
        }
        FeatureId::PowerManagement => {
            // One power state (NPSS 0): PS must be 0; the workload hint is kept.
            if value & 0x1F != 0 {
                return invalid;
            }
            controller.change_settings(|settings| settings.power_management = value & 0xFF);
            Outcome::success(0)
        }
        FeatureId::TemperatureThreshold => match temperature_threshold_index(value) {
            Some(index) => {
                controller.change_settings(|settings| {
                    if let Some(threshold) = settings.temperature_thresholds.get_mut(index) {
                        *threshold = value as u16;
                    }
                });
                Outcome::success(0)
            }
            None => invalid,
        },
        FeatureId::WriteAtomicityNormal => {
            controller.change_settings(|settings| settings.write_atomicity = value & 1);
            Outcome::success(0)
        }
        FeatureId::NumberOfQueues => {
            // Only between a reset and the first I/O queue (NVMe Base 2.0, 5.27.1.5).
            if controller.has_io_queues() {
                return Outcome::status(Status::COMMAND_SEQUENCE_ERROR.dnr());
            }
            let (submission, completion) = (value & 0xFFFF, value >> 16);
            if submission == 0xFFFF || completion == 0xFFFF {
                return invalid;
            }
            let granted = submission.max(completion).min(u32::from(queue.target.limits.io_queues_max).saturating_sub(1));
            Outcome::success(u64::from(granted | granted << 16))
        }
        FeatureId::VolatileWriteCache if has_write_cache(controller) => {
            controller.set_write_cache_enabled(value & 1 != 0);
            Outcome::success(0)
        }
        FeatureId::HostIdentifier => Outcome::status(Status::COMMAND_SEQUENCE_ERROR.dnr()),
        FeatureId::ReservationNotificationMask => {
            if value & !reservation::NOTIFICATION_MASK_ALL != 0 {
                return invalid;
            }
            match feature_namespaces(controller, command) {
                Some(None) => controller.set_reservation_mask(None, value),
                Some(Some(namespace)) if namespace.reservations_enabled => controller.set_reservation_mask(Some(namespace.id), value),
                _ => return invalid,
            }
            Outcome::success(u64::from(value))
        }
        FeatureId::ReservationPersistence => {
            let persist = value & 1 != 0;
            let Some(subsystem) = controller.subsystem() else { return invalid };
            let Some(store) = queue.target.reservation_store() else {
                return if persist { invalid } else { Outcome::success(0) };
            };
            let namespaces: Vec<Arc<Namespace>> = match feature_namespaces(controller, command) {
                Some(None) => subsystem.namespaces().values().filter(|n| n.reservations_enabled).cloned().collect(),
                Some(Some(namespace)) if namespace.reservations_enabled => vec![namespace],
                _ => return invalid,
            };
            for namespace in namespaces {
                let at = Some((store, subsystem.nqn.as_str(), namespace.id));
                let changed = namespace.reservations.change(at, false, |state| {
                    state.persist = persist;
                    Ok(Default::default())
                });
                if changed.is_err() {
                    return Outcome::status(Status::INTERNAL_ERROR);
                }
            }
            Outcome::success(0)
        }
        _ => set_common_feature(now, controller, command, identify::AEC_CRITICAL_WARNINGS | ASYNC_EVENT_NOTICES),
    }
}

/// The namespace a namespace-specific feature names: `Some(None)` for all of them
/// (NSID FFFFFFFFh), `None` for an NSID that names none.
fn feature_namespaces(controller: &Controller, command: &RawCommand) -> Option<Option<Arc<Namespace>>> {
    match command.namespace_id.get() {
        u32::MAX => Some(None),
        id => controller.subsystem()?.namespace(id).map(Some),
    }
}

/// The features every controller has, discovery ones too: Keep Alive Timer and
/// Asynchronous Event Configuration (which takes the bits in `events`).
pub(super) fn set_common_feature(now: Instant, controller: &Controller, command: &RawCommand, events: u32) -> Outcome {
    let value = command.cdw11.get();
    if feature::save(command) {
        return Outcome::status(Status::FEATURE_NOT_SAVEABLE.dnr());
    }
    match feature::feature_id(command) {
        FeatureId::AsyncEventConfiguration if value & !events == 0 => {
            controller.set_async_event_configuration(value);
            Outcome::success(0)
        }
        FeatureId::KeepAliveTimer => {
            controller.set_keep_alive_ms(value, now);
            Outcome::success(0)
        }
        _ => Outcome::status(Status::INVALID_FIELD.dnr()),
    }
}

fn get_features(queue: &Context, controller: &Controller, command: &RawCommand) -> Outcome {
    let cdw11 = command.cdw11.get();
    let Some(select) = feature::select(command) else { return Outcome::status(Status::INVALID_FIELD.dnr()) };
    // Nothing is saveable: SEL 10b (saved) reads the default (NVMe Base 2.0, 5.15.1).
    let current = select == Select::Current;
    let settings = if current { controller.settings() } else { Settings::default() };
    let queues = u64::from(queue.target.limits.io_queues_max.saturating_sub(1));
    let value = match feature::feature_id(command) {
        FeatureId::Arbitration => u64::from(settings.arbitration),
        FeatureId::PowerManagement => u64::from(settings.power_management),
        FeatureId::TemperatureThreshold => match temperature_threshold_index(cdw11) {
            Some(index) => settings.temperature_thresholds.get(index).copied().map_or(0, u64::from),
            None => return Outcome::status(Status::INVALID_FIELD.dnr()),
        },
        FeatureId::WriteAtomicityNormal => u64::from(settings.write_atomicity),
        FeatureId::NumberOfQueues => queues | queues << 16,
        FeatureId::VolatileWriteCache if has_write_cache(controller) => if current { u64::from(controller.write_cache_enabled()) } else { 1 },
        FeatureId::HostIdentifier => {
            if select == Select::Capabilities {
                return Outcome::success(0);
            }
            // Only the 128-bit identifier exists on fabrics: EXHID must be set.
            if cdw11 & 1 == 0 {
                return Outcome::status(Status::INVALID_FIELD.dnr());
            }
            return Outcome::send(controller.host_id.to_vec());
        }
        FeatureId::ReservationNotificationMask | FeatureId::ReservationPersistence => {
            let Some(Some(namespace)) = feature_namespaces(controller, command).filter(|n| n.as_ref().is_some_and(|n| n.reservations_enabled)) else {
                return Outcome::status(Status::INVALID_FIELD.dnr());
            };
            match feature::feature_id(command) {
                _ if !current => 0,
                FeatureId::ReservationNotificationMask => u64::from(controller.reservation_mask(namespace.id)),
                _ => u64::from(namespace.reservations.state().persist),
            }
        }
        _ => return get_common_feature(controller, command),
    };
    feature_answer(select, value)
}

/// Get Features of Keep Alive Timer and Asynchronous Event Configuration.
pub(super) fn get_common_feature(controller: &Controller, command: &RawCommand) -> Outcome {
    let Some(select) = feature::select(command) else { return Outcome::status(Status::INVALID_FIELD.dnr()) };
    let current = select == Select::Current;
    let value = match feature::feature_id(command) {
        FeatureId::AsyncEventConfiguration if current => u64::from(controller.async_event_configuration()),
        FeatureId::KeepAliveTimer if current => u64::from(controller.keep_alive_ms()),
        FeatureId::AsyncEventConfiguration | FeatureId::KeepAliveTimer => 0,
        _ => return Outcome::status(Status::INVALID_FIELD.dnr()),
    };
    feature_answer(select, value)
}

/// A feature's value for SEL 00b-10b, or its capabilities for SEL 11b.
fn feature_answer(select: Select, value: u64) -> Outcome {
    if select == Select::Capabilities { Outcome::success(feature::CAPABILITY_CHANGEABLE) } else { Outcome::success(value) }
}
