//! Persistent reservations of one namespace (NVMe Base Specification 2.0, section 8.19):
//! registrants keyed by Host Identifier, the reservation and its holder, and the
//! commands that change them. Sans-IO: the state is a value, each command returns what
//! it changed and whom to tell, and a [`ReservationStore`] keeps it across restarts
//! when the host asks for Persist Through Power Loss.
//!
//! Fencing: while a namespace has registrants, every I/O command of a registrant holds
//! an [`Admission`] until it is answered. Preempt and Abort marks the preempted hosts'
//! admissions revoked (commands not yet at the backend end with Command Aborted due to
//! Preempt and Abort) and completes only once none is left, so when the new holder
//! sees its success no write of a preempted host can still land.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use crate::wire::reservation::{AcquireAction, ActionWord, Notification, PersistChange, RegisterAction, Register, ReleaseAction, ReservationType, RegisteredController};
use crate::wire::Status;

/// A host's 128-bit Host Identifier, from its Connect data.
pub type HostId = [u8; 16];

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registrant {
    #[serde(with = "hex_host_id")]
    pub host_id: HostId,
    pub key: u64,
}

/// Who holds the reservation, and of which type. With an all-registrants type every
/// registrant holds it; `host_id` is then the one Report names first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    #[serde(with = "hex_host_id")]
    pub host_id: HostId,
    pub rtype: ReservationType,
}

/// A namespace's reservation state: what Reservation Report shows and what persists.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservationState {
    pub generation: u32,
    /// In the order they registered.
    pub registrants: Vec<Registrant>,
    pub holder: Option<Holder>,
    /// Persist Through Power Loss: kept across a restart of the target.
    pub persist: bool,
}

/// What a reservation command changed beyond its own status.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Effects {
    /// Notices for other hosts' controllers (log 80h and an event).
    pub notices: Vec<(HostId, Notification)>,
    /// Hosts whose registration a Preempt removed.
    pub preempted: Vec<HostId>,
}

fn conflict() -> Status {
    Status::RESERVATION_CONFLICT.dnr()
}

fn invalid() -> Status {
    Status::INVALID_FIELD.dnr()
}

impl ReservationState {
    fn registrant(&self, host: &HostId) -> Option<&Registrant> {
        self.registrants.iter().find(|r| &r.host_id == host)
    }

    pub fn is_registered(&self, host: &HostId) -> bool {
        self.registrant(host).is_some()
    }

    /// Whether `host` holds the reservation (any registrant, for all-registrants types).
    pub fn holds(&self, host: &HostId) -> bool {
        match self.holder {
            Some(holder) if holder.rtype.all_registrants() => self.is_registered(host),
            Some(holder) => &holder.host_id == host,
            None => false,
        }
    }

    /// The registrant `host` with current key `key`, or Reservation Conflict.
    fn check_key(&self, host: &HostId, key: u64) -> Result<(), Status> {
        match self.registrant(host) {
            Some(registrant) if registrant.key == key => Ok(()),
            _ => Err(conflict()),
        }
    }

    /// Whether `host` may run a command of the read group (`write` false: Read, Compare,
    /// Verify) or of the write group (Write, Write Zeroes, Dataset Management, Flush,
    /// Copy) under the current reservation (NVMe Base 2.0, Table 8.19 command behaviour).
    pub fn allows(&self, host: &HostId, write: bool) -> bool {
        let Some(holder) = self.holder else { return true };
        if self.holds(host) {
            return true;
        }
        let limited = write || holder.rtype.exclusive_access();
        !limited || (holder.rtype.registrants_have_access() && self.is_registered(host))
    }

    /// Tells every registrant but `except` about `notice`.
    fn tell_others(&self, except: &HostId, notice: Notification, effects: &mut Effects) {
        for registrant in self.registrants.iter().filter(|r| &r.host_id != except) {
            effects.notices.push((registrant.host_id, notice));
        }
    }

    /// Removes `host`'s registration; a reservation it held passes to the next
    /// registrant (all-registrants types) or is released, and registrants of a
    /// registrants-only type are told.
    fn unregister(&mut self, host: &HostId, effects: &mut Effects) {
        self.registrants.retain(|r| &r.host_id != host);
        let Some(holder) = self.holder else { return };
        if holder.rtype.all_registrants() {
            self.holder = self.registrants.first().map(|next| Holder { host_id: next.host_id, rtype: holder.rtype });
        } else if &holder.host_id == host {
            self.holder = None;
            if holder.rtype.registrants_have_access() {
                self.tell_others(host, Notification::ReservationReleased, effects);
            }
        }
    }

    /// Reservation Register. `can_persist`: a store exists for Persist Through Power Loss.
    pub fn register(&mut self, host: &HostId, command: Register, current_key: u64, new_key: u64, can_persist: bool) -> Result<Effects, Status> {
        if command.persist == PersistChange::Set && !can_persist {
            return Err(invalid());
        }
        let mut effects = Effects::default();
        if command.action != RegisterAction::Unregister && new_key == 0 {
            return Err(invalid());
        }
        let registered = self.registrant(host).map(|r| r.key);
        match (command.action, registered) {
            (RegisterAction::Register, Some(key)) if key != new_key => return Err(conflict()),
            (RegisterAction::Register, Some(_)) => {}
            (RegisterAction::Register, None) => self.registrants.push(Registrant { host_id: *host, key: new_key }),
            (RegisterAction::Replace, None) if command.ignore_existing_key => self.registrants.push(Registrant { host_id: *host, key: new_key }),
            (RegisterAction::Replace | RegisterAction::Unregister, None) => return Err(conflict()),
            (_, Some(key)) if !command.ignore_existing_key && key != current_key => return Err(conflict()),
            (RegisterAction::Replace, Some(_)) => {
                if let Some(registrant) = self.registrants.iter_mut().find(|r| &r.host_id == host) {
                    registrant.key = new_key;
                }
            }
            (RegisterAction::Unregister, Some(_)) => self.unregister(host, &mut effects),
        }
        match command.persist {
            PersistChange::Keep => {}
            PersistChange::Clear => self.persist = false,
            PersistChange::Set => self.persist = true,
        }
        self.generation = self.generation.wrapping_add(1);
        Ok(effects)
    }

    /// Reservation Acquire: acquire, preempt, or preempt and abort (the caller fences
    /// the hosts in `Effects::preempted` for the last).
    pub fn acquire(&mut self, host: &HostId, word: ActionWord, current_key: u64, preempt_key: u64) -> Result<Effects, Status> {
        let (Some(action), Some(rtype), false) = (word.acquire(), ReservationType::from_wire(word.rtype), word.ignore_existing_key) else {
            return Err(invalid());
        };
        self.check_key(host, current_key)?;
        let mut effects = Effects::default();
        if action == AcquireAction::Acquire {
            return match self.holder {
                None => {
                    self.holder = Some(Holder { host_id: *host, rtype });
                    Ok(effects)
                }
                Some(holder) if holder.rtype == rtype && self.holds(host) => Ok(effects),
                Some(_) => Err(conflict()),
            };
        }
        match self.holder {
            // No reservation: Preempt only removes the registrations with PRKEY.
            None => self.preempt_key(host, preempt_key, &mut effects)?,
            Some(holder) if holder.rtype.all_registrants() => {
                if preempt_key == 0 {
                    self.holder = Some(Holder { host_id: *host, rtype });
                    let others: Vec<HostId> = self.registrants.iter().map(|r| r.host_id).filter(|h| h != host).collect();
                    for other in others {
                        self.preempt_one(&other, &mut effects);
                    }
                } else {
                    self.preempt_key(host, preempt_key, &mut effects)?;
                }
            }
            Some(holder) => {
                let holder_key = self.registrant(&holder.host_id).map(|r| r.key);
                if Some(preempt_key) == holder_key {
                    if &holder.host_id != host {
                        self.holder = Some(Holder { host_id: *host, rtype });
                        self.preempt_key(host, preempt_key, &mut effects)?;
                    } else {
                        self.holder = Some(Holder { host_id: *host, rtype });
                    }
                    if holder.rtype != rtype {
                        self.tell_others(host, Notification::ReservationReleased, &mut effects);
                    }
                } else if preempt_key == 0 {
                    return Err(invalid());
                } else {
                    self.preempt_key(host, preempt_key, &mut effects)?;
                }
            }
        }
        self.generation = self.generation.wrapping_add(1);
        Ok(effects)
    }

    /// Removes every registration with `key` except `host`'s own; Reservation Conflict
    /// if there is none.
    fn preempt_key(&mut self, host: &HostId, key: u64, effects: &mut Effects) -> Result<(), Status> {
        let matching: Vec<HostId> = self.registrants.iter().filter(|r| r.key == key && &r.host_id != host).map(|r| r.host_id).collect();
        if matching.is_empty() {
            return Err(conflict());
        }
        for other in matching {
            self.preempt_one(&other, effects);
        }
        Ok(())
    }

    fn preempt_one(&mut self, other: &HostId, effects: &mut Effects) {
        self.unregister(other, effects);
        effects.notices.retain(|(to, _)| to != other);
        effects.notices.push((*other, Notification::RegistrationPreempted));
        effects.preempted.push(*other);
    }

    /// Reservation Release: release or clear.
    pub fn release(&mut self, host: &HostId, word: ActionWord, current_key: u64) -> Result<Effects, Status> {
        let (Some(action), false) = (word.release(), word.ignore_existing_key) else { return Err(invalid()) };
        self.check_key(host, current_key)?;
        let mut effects = Effects::default();
        match action {
            ReleaseAction::Release => {
                let Some(holder) = self.holder.filter(|_| self.holds(host)) else { return Ok(effects) };
                if ReservationType::from_wire(word.rtype) != Some(holder.rtype) {
                    return Err(invalid());
                }
                self.holder = None;
                if holder.rtype.registrants_have_access() {
                    self.tell_others(host, Notification::ReservationReleased, &mut effects);
                }
            }
            ReleaseAction::Clear => {
                self.tell_others(host, Notification::ReservationPreempted, &mut effects);
                self.holder = None;
                self.registrants.clear();
                self.generation = self.generation.wrapping_add(1);
            }
        }
        Ok(effects)
    }

    /// The registrants as Reservation Report lists them.
    pub fn report(&self) -> Vec<RegisteredController> {
        self.registrants.iter().map(|r| RegisteredController { host_id: r.host_id, key: r.key, holds_reservation: self.holds(&r.host_id) }).collect()
    }
}

/// Keeps reservation state with Persist Through Power Loss across restarts.
pub trait ReservationStore: Send + Sync + std::fmt::Debug {
    /// The persisted state of a namespace, if any.
    fn load(&self, subsystem: &str, namespace_id: u32) -> Option<ReservationState>;
    /// Persists `state`, or forgets the namespace's state for `None`; durable on return.
    fn save(&self, subsystem: &str, namespace_id: u32, state: Option<&ReservationState>) -> std::io::Result<()>;
}

/// The reservation state of a namespace, shared by every controller's queues.
#[derive(Debug, Default)]
pub struct Reservations {
    /// Set while there are registrants: I/O commands are checked and fenced.
    armed: AtomicBool,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    state: ReservationState,
    /// I/O commands of registrants not yet answered, by host.
    flights: HashMap<HostId, Flight>,
}

#[derive(Debug, Default)]
struct Flight {
    commands: usize,
    /// A Preempt and Abort removed the host: its commands not yet at the backend end.
    revoked: bool,
}

/// An I/O command of a registrant, admitted under the reservation; it counts until
/// dropped, which the queue does when it answers the command.
#[derive(Debug)]
pub struct Admission {
    reservations: Arc<Reservations>,
    host: HostId,
}

impl Admission {
    /// A Preempt and Abort removed this host after the command was admitted.
    pub fn revoked(&self) -> bool {
        self.reservations.lock().flights.get(&self.host).is_some_and(|f| f.revoked)
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut inner = self.reservations.lock();
        if let Some(flight) = inner.flights.get_mut(&self.host) {
            flight.commands = flight.commands.saturating_sub(1);
            if flight.commands == 0 {
                inner.flights.remove(&self.host);
            }
        }
    }
}

/// Why a change could not be kept.
#[derive(Debug)]
pub enum ChangeError {
    Refused(Status),
    /// The store could not persist it: the state is unchanged.
    NotPersisted(std::io::Error),
}

impl Reservations {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn restore(&self, state: ReservationState) {
        let mut inner = self.lock();
        self.armed.store(!state.registrants.is_empty(), Ordering::SeqCst);
        inner.state = state;
    }

    pub fn state(&self) -> ReservationState {
        self.lock().state.clone()
    }

    /// Admits an I/O command of `host` (`write`: of the write group), or Reservation
    /// Conflict. Commands of hosts that are not registrants need no admission: no
    /// Preempt can remove them.
    pub fn admit(self: &Arc<Self>, host: &HostId, write: bool) -> Result<Option<Admission>, Status> {
        // A host registering while its own command is on the way has no order between
        // the two; commands sent after its registration completed always see it.
        if !self.armed.load(Ordering::SeqCst) {
            return Ok(None);
        }
        let mut inner = self.lock();
        if !inner.state.allows(host, write) {
            return Err(conflict());
        }
        if !inner.state.is_registered(host) {
            return Ok(None);
        }
        let flight = inner.flights.entry(*host).or_default();
        flight.commands = flight.commands.saturating_add(1);
        Ok(Some(Admission { reservations: self.clone(), host: *host }))
    }

    /// Runs a reservation command on a copy of the state, persists the result when it
    /// must be (PTPL now or before), then makes it current. Preempted hosts' admitted
    /// commands are revoked when `abort`.
    pub fn change(&self, store: Option<(&dyn ReservationStore, &str, u32)>, abort: bool, command: impl FnOnce(&mut ReservationState) -> Result<Effects, Status>) -> Result<Effects, ChangeError> {
        let mut inner = self.lock();
        let mut next = inner.state.clone();
        let effects = command(&mut next).map_err(ChangeError::Refused)?;
        if next != inner.state && (next.persist || inner.state.persist) {
            if let Some((store, subsystem, namespace_id)) = store {
                store.save(subsystem, namespace_id, next.persist.then_some(&next)).map_err(ChangeError::NotPersisted)?;
            }
        }
        self.armed.store(!next.registrants.is_empty(), Ordering::SeqCst);
        inner.state = next;
        if abort {
            for host in &effects.preempted {
                if let Some(flight) = inner.flights.get_mut(host) {
                    flight.revoked = true;
                }
            }
        }
        Ok(effects)
    }

    /// Whether no admitted command of `hosts` is left.
    pub fn drained(&self, hosts: &[HostId]) -> bool {
        let inner = self.lock();
        hosts.iter().all(|host| !inner.flights.contains_key(host))
    }
}

/// Host Identifiers as 32 hexadecimal digits in the persisted state.
mod hex_host_id {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(id: &super::HostId, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&id.iter().map(|b| format!("{b:02x}")).collect::<String>())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<super::HostId, D::Error> {
        let text = String::deserialize(deserializer)?;
        let invalid = || serde::de::Error::custom("a host identifier is 32 hexadecimal digits");
        let digits = text.as_bytes();
        if digits.len() != 32 {
            return Err(invalid());
        }
        let mut id = [0u8; 16];
        for (byte, pair) in id.iter_mut().zip(digits.chunks_exact(2)) {
            let pair = std::str::from_utf8(pair).map_err(|_| invalid())?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| invalid())?;
        }
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::reservation::RegisterAction::{Replace, Unregister};
    const REGISTER: RegisterAction = RegisterAction::Register;

    const A: HostId = [0xA; 16];
    const B: HostId = [0xB; 16];
    const C: HostId = [0xC; 16];

    fn register(action: RegisterAction) -> Register {
        Register { action, ignore_existing_key: false, persist: PersistChange::Keep }
    }

    fn word(action: u8, rtype: u8) -> ActionWord {
        ActionWord { action, ignore_existing_key: false, rtype }
    }

    /// A, B and C registered with keys 1, 2 and 3.
    fn three() -> ReservationState {
        let mut state = ReservationState::default();
        for (host, key) in [(A, 1), (B, 2), (C, 3)] {
            state.register(&host, register(REGISTER), 0, key, false).unwrap();
        }
        state
    }

    #[test]
    fn register_unregister_and_replace_check_keys() {
        let mut state = ReservationState::default();
        assert_eq!(state.register(&A, register(REGISTER), 0, 0, false), Err(Status::INVALID_FIELD.dnr()), "key 0 is refused");
        state.register(&A, register(REGISTER), 0, 5, false).unwrap();
        state.register(&A, register(REGISTER), 0, 5, false).expect("the same key again is no error");
        assert_eq!(state.register(&A, register(REGISTER), 0, 6, false), Err(conflict()));
        assert_eq!(state.register(&A, register(Replace), 4, 6, false), Err(conflict()), "wrong current key");
        state.register(&A, register(Replace), 5, 6, false).unwrap();
        assert_eq!(state.registrants, vec![Registrant { host_id: A, key: 6 }]);
        let ignore = Register { ignore_existing_key: true, ..register(Replace) };
        state.register(&A, ignore, 0, 7, false).expect("IEKEY replaces without the current key");
        assert_eq!(state.register(&B, register(Replace), 0, 9, false), Err(conflict()), "replace without a registration");
        state.register(&B, ignore, 0, 9, false).expect("IEKEY replace registers");
        assert_eq!(state.register(&B, register(Unregister), 1, 0, false), Err(conflict()));
        state.register(&B, register(Unregister), 9, 0, false).unwrap();
        assert_eq!(state.register(&C, register(Unregister), 0, 0, false), Err(conflict()));
        assert_eq!(state.generation, 6, "each successful Register counts");
    }

    #[test]
    fn persist_through_power_loss_needs_a_store() {
        let mut state = ReservationState::default();
        let set = Register { persist: PersistChange::Set, ..register(REGISTER) };
        assert_eq!(state.register(&A, set, 0, 1, false), Err(Status::INVALID_FIELD.dnr()));
        assert!(state.registrants.is_empty(), "a refused command changes nothing");
        state.register(&A, set, 0, 1, true).unwrap();
        assert!(state.persist);
        state.register(&A, Register { persist: PersistChange::Clear, ..register(REGISTER) }, 0, 1, true).unwrap();
        assert!(!state.persist);
    }

    #[test]
    fn each_type_allows_what_the_spec_table_says() {
        // (type, registrant read, registrant write, other read, other write)
        let table = [
            (1, true, false, true, false),
            (2, false, false, false, false),
            (3, true, true, true, false),
            (4, true, true, false, false),
            (5, true, true, true, false),
            (6, true, true, false, false),
        ];
        for (rtype, reg_read, reg_write, other_read, other_write) in table {
            let mut state = ReservationState::default();
            state.register(&A, register(REGISTER), 0, 1, false).unwrap();
            state.register(&B, register(REGISTER), 0, 2, false).unwrap();
            state.acquire(&A, word(0, rtype), 1, 0).unwrap();
            assert!(state.allows(&A, true) && state.allows(&A, false), "type {rtype}: the holder");
            assert_eq!(state.allows(&B, false), reg_read, "type {rtype}: registrant read");
            assert_eq!(state.allows(&B, true), reg_write, "type {rtype}: registrant write");
            assert_eq!(state.allows(&C, false), other_read, "type {rtype}: non-registrant read");
            assert_eq!(state.allows(&C, true), other_write, "type {rtype}: non-registrant write");
        }
    }

    #[test]
    fn acquire_is_for_registrants_with_their_key_and_one_holder() {
        let mut state = three();
        assert_eq!(state.acquire(&A, word(0, 1), 9, 0), Err(conflict()), "wrong key");
        assert_eq!(state.acquire(&A, word(0, 7), 1, 0), Err(Status::INVALID_FIELD.dnr()), "bad type");
        assert_eq!(state.acquire(&A, word(3, 1), 1, 0), Err(Status::INVALID_FIELD.dnr()), "bad action");
        assert_eq!(state.acquire(&A, ActionWord { ignore_existing_key: true, ..word(0, 1) }, 1, 0), Err(Status::INVALID_FIELD.dnr()));
        state.acquire(&A, word(0, 1), 1, 0).unwrap();
        state.acquire(&A, word(0, 1), 1, 0).expect("the holder acquiring the same type again");
        assert_eq!(state.acquire(&A, word(0, 2), 1, 0), Err(conflict()), "another type");
        assert_eq!(state.acquire(&B, word(0, 1), 2, 0), Err(conflict()), "another host");
        let mut stranger = three();
        assert_eq!(stranger.acquire(&[0xD; 16], word(0, 1), 0, 0), Err(conflict()), "not a registrant");
    }

    #[test]
    fn preempt_takes_the_reservation_and_removes_the_holder() {
        let mut state = three();
        state.acquire(&A, word(0, 3), 1, 0).unwrap();
        let effects = state.acquire(&B, word(1, 1), 2, 1).unwrap();
        assert_eq!(state.holder, Some(Holder { host_id: B, rtype: ReservationType::WriteExclusive }));
        assert!(!state.is_registered(&A));
        assert_eq!(effects.preempted, vec![A]);
        assert!(effects.notices.contains(&(A, Notification::RegistrationPreempted)));
        assert!(effects.notices.contains(&(C, Notification::ReservationReleased)), "the type changed: {effects:?}");
        assert_eq!(state.acquire(&B, word(1, 1), 2, 0), Err(Status::INVALID_FIELD.dnr()), "PRKEY 0 with one holder");
        assert_eq!(state.acquire(&B, word(1, 1), 2, 42), Err(conflict()), "PRKEY that names no one");
        let effects = state.acquire(&B, word(1, 1), 2, 3).unwrap();
        assert_eq!(effects.preempted, vec![C], "a non-holder key only unregisters");
        assert_eq!(state.holder.map(|h| h.host_id), Some(B));
    }

    #[test]
    fn all_registrants_reservation_follows_registrants() {
        let mut state = three();
        state.acquire(&A, word(0, 5), 1, 0).unwrap();
        assert!(state.holds(&B) && state.holds(&C));
        state.register(&A, register(Unregister), 1, 0, false).unwrap();
        assert_eq!(state.holder.map(|h| h.rtype), Some(ReservationType::WriteExclusiveAllRegistrants), "stays while registrants remain");
        let effects = state.acquire(&B, word(2, 1), 2, 0).unwrap();
        assert_eq!(effects.preempted, vec![C], "PRKEY 0 removes every other registrant");
        assert_eq!(state.holder, Some(Holder { host_id: B, rtype: ReservationType::WriteExclusive }));
    }

    #[test]
    fn release_and_clear_notify_the_others() {
        let mut state = three();
        state.acquire(&A, word(0, 4), 1, 0).unwrap();
        state.release(&B, word(0, 4), 2).expect("a non-holder's release does nothing");
        assert!(state.holder.is_some());
        assert_eq!(state.release(&A, word(0, 2), 1), Err(Status::INVALID_FIELD.dnr()), "type mismatch");
        assert_eq!(state.release(&A, word(0, 4), 9), Err(conflict()), "wrong key");
        let effects = state.release(&A, word(0, 4), 1).unwrap();
        assert_eq!(state.holder, None);
        assert_eq!(effects.notices, vec![(B, Notification::ReservationReleased), (C, Notification::ReservationReleased)]);
        state.acquire(&A, word(0, 1), 1, 0).unwrap();
        assert!(state.release(&A, word(0, 1), 1).unwrap().notices.is_empty(), "Write Exclusive: no notice");
        let effects = state.release(&B, word(1, 0), 2).unwrap();
        assert!(state.registrants.is_empty() && state.holder.is_none());
        assert_eq!(effects.notices, vec![(A, Notification::ReservationPreempted), (C, Notification::ReservationPreempted)]);
    }

    #[derive(Debug, Default)]
    struct MemoryStore {
        saved: Mutex<Vec<Option<ReservationState>>>,
        fail: AtomicBool,
    }

    impl ReservationStore for MemoryStore {
        fn load(&self, _: &str, _: u32) -> Option<ReservationState> {
            self.saved.lock().unwrap().last().cloned().flatten()
        }
        fn save(&self, _: &str, _: u32, state: Option<&ReservationState>) -> std::io::Result<()> {
            if self.fail.load(Ordering::SeqCst) {
                return Err(std::io::Error::other("disk full"));
            }
            self.saved.lock().unwrap().push(state.cloned());
            Ok(())
        }
    }

    #[test]
    fn only_persistent_state_is_saved_and_a_failed_save_changes_nothing() {
        let reservations = Reservations::default();
        let store = MemoryStore::default();
        let at = Some((&store as &dyn ReservationStore, "nqn.2026-11.io.p2ptgt:s", 1));
        reservations.change(at, false, |s| s.register(&A, register(REGISTER), 0, 1, true)).unwrap();
        assert!(store.saved.lock().unwrap().is_empty(), "no PTPL: nothing saved");
        let set = Register { persist: PersistChange::Set, ..register(REGISTER) };
        reservations.change(at, false, |s| s.register(&A, set, 0, 1, true)).unwrap();
        assert_eq!(store.load("", 0).map(|s| s.registrants.len()), Some(1));
        store.fail.store(true, Ordering::SeqCst);
        let refused = reservations.change(at, false, |s| s.acquire(&A, word(0, 1), 1, 0));
        assert!(matches!(refused, Err(ChangeError::NotPersisted(_))));
        assert_eq!(reservations.state().holder, None, "not kept when not persisted");
        store.fail.store(false, Ordering::SeqCst);
        let clear = Register { persist: PersistChange::Clear, ..register(REGISTER) };
        reservations.change(at, false, |s| s.register(&A, clear, 0, 1, true)).unwrap();
        assert_eq!(store.saved.lock().unwrap().last(), Some(&None), "PTPL off forgets the saved state");
    }

    #[test]
    fn preempt_and_abort_revokes_and_waits_for_admitted_commands() {
        let reservations = Arc::new(Reservations::default());
        assert!(reservations.admit(&A, true).unwrap().is_none(), "no registrants: nothing to fence");
        reservations.change(None, false, |s| s.register(&A, register(REGISTER), 0, 1, false)).unwrap();
        reservations.change(None, false, |s| s.register(&B, register(REGISTER), 0, 2, false)).unwrap();
        reservations.change(None, false, |s| s.acquire(&A, word(0, 1), 1, 0)).unwrap();
        let holder_write = reservations.admit(&A, true).unwrap().expect("a registrant's command is counted");
        assert_eq!(reservations.admit(&B, true).unwrap_err(), conflict());
        let read = reservations.admit(&B, false).unwrap().expect("Write Exclusive lets registrants read");
        let effects = reservations.change(None, true, |s| s.acquire(&B, word(2, 1), 2, 1)).unwrap();
        assert_eq!(effects.preempted, vec![A]);
        assert!(holder_write.revoked());
        assert!(!read.revoked());
        assert!(!reservations.drained(&[A]));
        assert_eq!(reservations.admit(&A, true).unwrap_err(), conflict(), "the preempted host is fenced at once");
        drop(holder_write);
        assert!(reservations.drained(&[A]));
        drop(read);
        assert!(reservations.drained(&[A, B]));
    }

    #[test]
    fn persisted_state_round_trips_through_json() {
        let mut state = three();
        state.acquire(&B, word(0, 6), 2, 0).unwrap();
        state.persist = true;
        let text = serde_json::to_string(&state).unwrap();
        assert!(text.contains("0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b"), "{text}");
        assert_eq!(serde_json::from_str::<ReservationState>(&text).unwrap(), state);
        assert!(serde_json::from_str::<Registrant>(r#"{"host_id":"zz","key":1}"#).is_err());
    }
}
