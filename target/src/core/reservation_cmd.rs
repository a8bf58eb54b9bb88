//! The reservation commands on an I/O queue (Register, Report, Acquire, Release): their
//! data checked, the namespace's reservation changed and kept, other hosts told.

use std::sync::Arc;

use tracing::{info, warn};

use super::context::Context;
use super::controller::Controller;
use super::outcome::{Inbound, Outcome, Work};
use super::reservation::{ChangeError, HostId};
use super::subsystem::Namespace;
use crate::wire::command::io as opcode;
use crate::wire::reservation::{self, AcquireAction, ActionWord, Register};
use crate::wire::{DataPointer, RawCommand, Status};

pub(crate) fn is_reservation(opcode: u8) -> bool {
    matches!(opcode, opcode::RESERVATION_REGISTER | opcode::RESERVATION_REPORT | opcode::RESERVATION_ACQUIRE | opcode::RESERVATION_RELEASE)
}

/// A controller without a Host Identifier (all zeros) cannot take part: every such
/// host would be the same registrant.
fn has_host_id(controller: &Controller) -> bool {
    controller.host_id != HostId::default()
}

/// What a reservation command does first: Report answers at once; the others fetch
/// their keys. `None` for any other opcode.
pub(crate) fn begin(controller: &Controller, namespace: Arc<Namespace>, command: &RawCommand, data: DataPointer) -> Option<Outcome> {
    if !is_reservation(command.opcode) {
        return None;
    }
    if !namespace.reservations_enabled {
        return Some(Outcome::status(Status::INVALID_OPCODE.dnr()));
    }
    if !has_host_id(controller) {
        return Some(Outcome::status(Status::COMMAND_SEQUENCE_ERROR.dnr()));
    }
    let key_bytes = match command.opcode {
        opcode::RESERVATION_REPORT => return Some(report(&namespace, command, data)),
        opcode::RESERVATION_RELEASE => reservation::ONE_KEY_BYTES,
        _ => reservation::TWO_KEYS_BYTES,
    };
    if data.length_bytes() != key_bytes {
        return Some(Outcome::status(Status::SGL_INVALID_DATA.dnr()));
    }
    Some(Outcome::Transfer(Work::Inbound(Inbound::Reservation { namespace })))
}

/// Reservation Report: NUMD + 1 dwords of the status structure. Host Identifiers are
/// 128-bit on fabrics, so only the extended structure (EDS) can carry them.
fn report(namespace: &Namespace, command: &RawCommand, data: DataPointer) -> Outcome {
    if command.cdw11.get() & 1 == 0 {
        return Outcome::status(Status::HOST_ID_INCONSISTENT.dnr());
    }
    let len_bytes = u64::from(command.cdw10.get()).saturating_add(1).saturating_mul(4);
    if matches!(data, DataPointer::InCapsule { .. }) {
        return Outcome::status(Status::INVALID_FIELD.dnr());
    }
    if u64::from(data.length_bytes()) != len_bytes {
        return Outcome::status(Status::SGL_INVALID_DATA.dnr());
    }
    let state = namespace.reservations.state();
    let rtype = state.holder.map(|holder| holder.rtype);
    Outcome::send(reservation::encode_report(state.generation, rtype, state.persist, &state.report(), len_bytes as usize))
}

/// Register, Acquire or Release with its keys arrived.
pub(crate) fn execute(queue: &Context, namespace: &Arc<Namespace>, command: &RawCommand, keys: &[u8]) -> Outcome {
    let Some((controller, subsystem)) = queue.controller.and_then(|c| Some((c, c.subsystem()?))) else {
        return Outcome::status(Status::COMMAND_SEQUENCE_ERROR.dnr());
    };
    let host = controller.host_id;
    let cdw10 = command.cdw10.get();
    let (first, second) = reservation::keys(keys);
    let store = queue.target.reservation_store().map(|store| (store, subsystem.nqn.as_str(), namespace.id));
    let reservations = &namespace.reservations;
    let word = ActionWord::parse(cdw10);
    let abort = command.opcode == opcode::RESERVATION_ACQUIRE && word.acquire() == Some(AcquireAction::PreemptAndAbort);
    let result = match command.opcode {
        opcode::RESERVATION_REGISTER => match Register::parse(cdw10) {
            Some(register) => reservations.change(store, false, |state| state.register(&host, register, first, second, store.is_some())),
            None => return Outcome::status(Status::INVALID_FIELD.dnr()),
        },
        opcode::RESERVATION_ACQUIRE => reservations.change(store, abort, |state| state.acquire(&host, word, first, second)),
        _ => reservations.change(store, false, |state| state.release(&host, word, first)),
    };
    let effects = match result {
        Ok(effects) => effects,
        Err(ChangeError::Refused(status)) => return Outcome::status(status),
        Err(ChangeError::NotPersisted(error)) => {
            warn!(subsystem = %subsystem.nqn, nsid = namespace.id, %error, "reservation change not made: its state could not be persisted");
            return Outcome::status(Status::INTERNAL_ERROR);
        }
    };
    let state = reservations.state();
    info!(
        subsystem = %subsystem.nqn, nsid = namespace.id, host = %controller.host_nqn, opcode = command.opcode, action = word.action,
        registrants = state.registrants.len(), reservation = ?state.holder.map(|h| h.rtype), preempted = effects.preempted.len(),
        "reservation changed"
    );
    for (to, notice) in &effects.notices {
        queue.target.notify_reservation(&subsystem.nqn, namespace.id, to, *notice);
    }
    if abort && !effects.preempted.is_empty() {
        return Outcome::AwaitFence { namespace: namespace.clone(), hosts: effects.preempted };
    }
    Outcome::success(0)
}
