//! One controller of the dynamic model: its registers (CC, CSTS), features, keep-alive
//! timer, pending asynchronous events and which I/O queues are connected. Shared by the
//! controller's queues, which may run on different threads.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::auth::Authenticator;
use super::subsystem::{Subsystem, DISCOVERY_NQN};
use crate::wire::identify::{OAES_ANA_CHANGE, OAES_DISCOVERY_CHANGE, OAES_NAMESPACE_ATTRIBUTE};
use crate::wire::log_page::ErrorEntry;
use crate::wire::reservation::Notification;
use crate::wire::Status;

#[derive(Debug)]
pub enum ControllerKind {
    Io(Arc<Subsystem>),
    Discovery,
}

/// Controller Configuration fields (NVMe Base Specification 2.0, section 3.1.3.5).
pub mod cc {
    pub const ENABLE: u32 = 1;
    pub const SHUTDOWN_MASK: u32 = 3 << 14;
    pub fn css(cc: u32) -> u32 {
        (cc >> 4) & 7
    }
    pub fn mps(cc: u32) -> u32 {
        (cc >> 7) & 0xF
    }
    pub fn ams(cc: u32) -> u32 {
        (cc >> 11) & 7
    }
    pub fn iosqes(cc: u32) -> u32 {
        (cc >> 16) & 0xF
    }
    pub fn iocqes(cc: u32) -> u32 {
        (cc >> 20) & 0xF
    }
}

/// Controller Status fields.
pub mod csts {
    pub const READY: u32 = 1;
    pub const FATAL: u32 = 1 << 1;
    pub const SHUTDOWN_COMPLETE: u32 = 2 << 2;
}

/// Keep-alive used for a discovery controller that asked for none (nvmet's fallback).
const DISCOVERY_KEEP_ALIVE: Duration = Duration::from_secs(120);

#[derive(Debug)]
struct Registers {
    configuration: u32,
    status: u32,
}

#[derive(Debug)]
struct KeepAlive {
    /// None: the host asked for no keep-alive.
    timeout: Option<Duration>,
    deadline: Instant,
}

/// Features whose values only this controller keeps: they change nothing the target
/// does, but the host may set and read them back (NVMe Base 2.0, section 5.27.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Arbitration (01h), as the host set it.
    pub arbitration: u32,
    /// Power Management (02h): power state and workload hint.
    pub power_management: u32,
    /// Temperature Threshold (04h) of the composite temperature: over, under (kelvin).
    pub temperature_thresholds: [u16; 2],
    /// Write Atomicity Normal (0Ah).
    pub write_atomicity: u32,
}

impl Default for Settings {
    fn default() -> Self {
        // Over-temperature threshold 343 K (70 °C); no under-temperature threshold.
        Settings { arbitration: 0, power_management: 0, temperature_thresholds: [343, 0], write_atomicity: 0 }
    }
}

/// Entries the Error Information log keeps (ELPE + 1), as nvmet.
pub const ERROR_LOG_ENTRIES: usize = 128;

/// The controller's Error Information log: the newest entries, and how many there were.
#[derive(Debug, Default)]
struct ErrorLog {
    count: u64,
    newest_last: VecDeque<ErrorEntry>,
}

#[derive(Debug, Default)]
struct Events {
    /// Completion Dword 0 values of events not yet reported.
    pending: VecDeque<u32>,
    changed_namespaces: Vec<u32>,
    /// Asynchronous Event Configuration (feature 0Bh).
    configuration: u32,
    /// Notices (as AEC bits) reported and not yet cleared by reading their log: no
    /// second event of the kind is raised until the host reads it (NVMe Base 2.0,
    /// 5.2: an event type is masked until its log page is read).
    masked: u32,
}

/// Reservation notices (log 80h) and what this controller's host masked of them.
#[derive(Debug, Default)]
struct ReservationNotices {
    /// Log Page Count of the newest entry; never 0 once there are entries.
    count: u64,
    /// Entries not yet read: count, type, NSID.
    entries: VecDeque<(u64, Notification, u32)>,
    /// The event was reported and the log not read since.
    masked: bool,
    /// Reservation Notification Mask (feature 82h) of each namespace, and of every
    /// namespace without one of its own.
    masks: BTreeMap<u32, u32>,
    default_mask: u32,
}

impl ReservationNotices {
    /// The Reservation Notification Mask in force for namespace `namespace_id`.
    fn mask(&self, namespace_id: u32) -> u32 {
        self.masks.get(&namespace_id).copied().unwrap_or(self.default_mask)
    }
}

/// Reservation notices kept unread; the oldest go first (their counts leave a gap).
const RESERVATION_NOTICES_MAX: usize = 256;

/// Completion Dword 0 of the reservation event: type I/O Command specific status
/// (6h), Reservation Log Page Available (0h), log 80h.
const RESERVATION_EVENT: u32 = (crate::wire::log_page::id::RESERVATION_NOTIFICATION as u32) << 16 | 0x06;

/// Changed Namespace List entries kept; one more makes the log read FFFFFFFFh.
const CHANGED_NAMESPACES_MAX: usize = 1024;

/// Completion Dword 0 of a notice (event type 2h): its information and log page.
fn notice(information: u8, log_page: u8) -> u32 {
    u32::from(log_page) << 16 | u32::from(information) << 8 | 0x02
}

#[derive(Debug)]
pub struct Controller {
    pub id: u16,
    pub kind: ControllerKind,
    /// The port the host connected through: ANA states are the port's.
    pub port_id: u16,
    pub host_nqn: String,
    pub host_id: [u8; 16],
    registers: Mutex<Registers>,
    keep_alive: Mutex<KeepAlive>,
    /// Set by any command (traffic based keep-alive, CTRATT.TBKAS).
    traffic_seen: AtomicBool,
    events: Mutex<Events>,
    reservation_notices: Mutex<ReservationNotices>,
    settings: Mutex<Settings>,
    errors: Mutex<ErrorLog>,
    /// Connected I/O queues and the reset generation each connected in.
    io_queues: Mutex<BTreeMap<u16, u32>>,
    write_cache_enabled: AtomicBool,
    /// Set when keep-alive expired, the admin queue went away or a reset asks the I/O
    /// queues to leave: every queue of the controller disconnects.
    dead: AtomicBool,
    reset_generation: std::sync::atomic::AtomicU32,
    /// In-band authentication, for a host with a key: `None` when none is required.
    authentication: Mutex<Option<Authenticator>>,
}

impl Events {
    fn raise(&mut self, kind: u32, dword0: u32) {
        if self.configuration & kind != 0 && self.masked & kind == 0 {
            self.masked |= kind;
            self.pending.push_back(dword0);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Controller {
    pub fn new(id: u16, kind: ControllerKind, port_id: u16, host_nqn: &str, host_id: [u8; 16], keep_alive_ms: u32, now: Instant) -> Controller {
        let timeout = keep_alive_timeout(&kind, keep_alive_ms);
        Controller {
            id,
            kind,
            port_id,
            host_nqn: host_nqn.to_owned(),
            host_id,
            registers: Mutex::new(Registers { configuration: 0, status: 0 }),
            keep_alive: Mutex::new(KeepAlive { timeout, deadline: later(now, timeout.unwrap_or_default()) }),
            traffic_seen: AtomicBool::new(false),
            events: Mutex::new(Events::default()),
            reservation_notices: Mutex::new(ReservationNotices::default()),
            settings: Mutex::new(Settings::default()),
            errors: Mutex::new(ErrorLog::default()),
            io_queues: Mutex::new(BTreeMap::new()),
            write_cache_enabled: AtomicBool::new(true),
            dead: AtomicBool::new(false),
            reset_generation: Default::default(),
            authentication: Mutex::new(None),
        }
    }

    /// The host must authenticate on the admin queue before the controller serves it.
    pub fn require_authentication(&self, authenticator: Authenticator) {
        *lock(&self.authentication) = Some(authenticator);
    }

    /// Whether the host was asked to authenticate (the Connect response's ATR bit).
    pub fn requires_authentication(&self) -> bool {
        lock(&self.authentication).is_some()
    }

    /// Whether the controller may serve the host: no authentication is required, or
    /// the host has authenticated.
    pub fn is_authenticated(&self) -> bool {
        lock(&self.authentication).as_ref().is_none_or(Authenticator::is_authenticated)
    }

    /// Runs `f` on the controller's authentication, if one is required.
    pub fn with_authentication<R>(&self, f: impl FnOnce(&mut Authenticator) -> R) -> Option<R> {
        lock(&self.authentication).as_mut().map(f)
    }

    pub fn subsystem_nqn(&self) -> &str {
        match &self.kind {
            ControllerKind::Io(subsystem) => &subsystem.nqn,
            ControllerKind::Discovery => DISCOVERY_NQN,
        }
    }

    pub fn subsystem(&self) -> Option<&Arc<Subsystem>> {
        match &self.kind {
            ControllerKind::Io(subsystem) => Some(subsystem),
            ControllerKind::Discovery => None,
        }
    }

    pub fn is_discovery(&self) -> bool {
        matches!(self.kind, ControllerKind::Discovery)
    }

    pub fn configuration(&self) -> u32 {
        lock(&self.registers).configuration
    }

    pub fn status(&self) -> u32 {
        lock(&self.registers).status
    }

    pub fn is_ready(&self) -> bool {
        self.status() & csts::READY != 0 && !self.is_dead()
    }

    /// Property Set CC: enable, disable (reset) and shutdown transitions.
    pub fn set_configuration(&self, value: u32) {
        let mut registers = lock(&self.registers);
        let old = registers.configuration;
        registers.configuration = value;
        let enabling = old & cc::ENABLE == 0 && value & cc::ENABLE != 0;
        let disabling = old & cc::ENABLE != 0 && value & cc::ENABLE == 0;
        if enabling {
            if self.configuration_valid(value) {
                registers.status |= csts::READY;
            } else {
                registers.status |= csts::FATAL;
            }
        }
        if disabling {
            // A controller reset: I/O queues must go and be connected again.
            registers.status &= !(csts::READY | csts::SHUTDOWN_COMPLETE);
            self.reset_generation.fetch_add(1, Ordering::Relaxed);
            lock(&self.io_queues).clear();
        }
        if old & cc::SHUTDOWN_MASK == 0 && value & cc::SHUTDOWN_MASK != 0 {
            registers.status |= csts::SHUTDOWN_COMPLETE;
            registers.status &= !csts::READY;
            self.reset_generation.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn configuration_valid(&self, value: u32) -> bool {
        // CAP.CSS advertises the NVM command set only: CC.CSS 000b.
        let basic = cc::mps(value) == 0 && cc::ams(value) == 0 && cc::css(value) == 0;
        match self.kind {
            ControllerKind::Io(_) => basic && cc::iosqes(value) == 6 && cc::iocqes(value) == 4,
            ControllerKind::Discovery => basic,
        }
    }

    /// Changes each time the controller is reset or shut down; I/O queues connected in
    /// an older generation leave.
    pub fn reset_generation(&self) -> u32 {
        self.reset_generation.load(Ordering::Relaxed)
    }

    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Relaxed)
    }

    /// Fatal error: CSTS.CFS and every queue of the controller disconnects.
    pub fn fail(&self) {
        lock(&self.registers).status |= csts::FATAL;
        self.dead.store(true, Ordering::Relaxed);
    }

    pub fn keep_alive_ms(&self) -> u32 {
        lock(&self.keep_alive).timeout.map_or(0, |t| t.as_millis() as u32)
    }

    pub fn set_keep_alive_ms(&self, keep_alive_ms: u32, now: Instant) {
        let mut keep_alive = lock(&self.keep_alive);
        keep_alive.timeout = keep_alive_timeout(&self.kind, keep_alive_ms);
        keep_alive.deadline = later(now, keep_alive.timeout.unwrap_or_default());
    }

    /// Any command counts as keep-alive traffic.
    pub fn note_traffic(&self) {
        self.traffic_seen.store(true, Ordering::Relaxed);
    }

    /// Keep Alive command: re-arms the timer. Error if the host asked for no timer.
    pub fn keep_alive(&self, now: Instant) -> Result<(), Status> {
        let mut keep_alive = lock(&self.keep_alive);
        let timeout = keep_alive.timeout.ok_or(Status::KEEP_ALIVE_TIMEOUT_INVALID.dnr())?;
        keep_alive.deadline = later(now, timeout);
        Ok(())
    }

    pub fn keep_alive_deadline(&self) -> Option<Instant> {
        let keep_alive = lock(&self.keep_alive);
        keep_alive.timeout.map(|_| keep_alive.deadline)
    }

    /// At the deadline: re-arm once if traffic was seen, else expire. Returns whether the
    /// controller expired.
    pub fn check_keep_alive(&self, now: Instant) -> bool {
        let mut keep_alive = lock(&self.keep_alive);
        let Some(timeout) = keep_alive.timeout else { return false };
        if now < keep_alive.deadline {
            return false;
        }
        if self.traffic_seen.swap(false, Ordering::Relaxed) {
            keep_alive.deadline = later(now, timeout);
            return false;
        }
        drop(keep_alive);
        self.fail();
        true
    }

    pub fn write_cache_enabled(&self) -> bool {
        self.write_cache_enabled.load(Ordering::Relaxed)
    }

    pub fn set_write_cache_enabled(&self, enabled: bool) {
        self.write_cache_enabled.store(enabled, Ordering::Relaxed);
    }

    pub fn async_event_configuration(&self) -> u32 {
        lock(&self.events).configuration
    }

    pub fn set_async_event_configuration(&self, value: u32) {
        lock(&self.events).configuration = value;
    }

    /// Records a namespace change in the Changed Namespace List log and raises a
    /// Namespace Attribute Changed notice if the host enabled it and has read the log
    /// since the last one.
    pub fn namespace_changed(&self, namespace_id: u32) {
        let mut events = lock(&self.events);
        if events.changed_namespaces.len() <= CHANGED_NAMESPACES_MAX && !events.changed_namespaces.contains(&namespace_id) {
            events.changed_namespaces.push(namespace_id);
        }
        events.raise(OAES_NAMESPACE_ATTRIBUTE, notice(0x00, crate::wire::log_page::id::CHANGED_NAMESPACES));
    }

    /// An ANA group's state changed on this controller's port: an ANA Change notice,
    /// masked until the host reads log 0Ch.
    pub fn ana_changed(&self) {
        lock(&self.events).raise(OAES_ANA_CHANGE, notice(0x03, crate::wire::log_page::id::ANA));
    }

    /// Log 0Ch was read; without Retain Asynchronous Event its notice is unmasked.
    pub fn ana_log_read(&self, retain: bool) {
        if !retain {
            lock(&self.events).masked &= !OAES_ANA_CHANGE;
        }
    }

    /// The discovery log changed: a Discovery Log Page Change notice, masked likewise
    /// until the host reads the discovery log.
    pub fn discovery_changed(&self) {
        lock(&self.events).raise(OAES_DISCOVERY_CHANGE, notice(0xF0, crate::wire::log_page::id::DISCOVERY));
    }

    pub fn take_event(&self) -> Option<u32> {
        lock(&self.events).pending.pop_front()
    }

    /// Reading log 04h clears it, and unmasks its notice, unless the host asked to
    /// retain it.
    pub fn changed_namespaces(&self, retain: bool) -> Vec<u32> {
        let mut events = lock(&self.events);
        if retain {
            events.changed_namespaces.clone()
        } else {
            events.masked &= !OAES_NAMESPACE_ATTRIBUTE;
            std::mem::take(&mut events.changed_namespaces)
        }
    }

    /// The discovery log was read; without Retain Asynchronous Event its notice is
    /// unmasked.
    pub fn discovery_log_read(&self, retain: bool) {
        if !retain {
            lock(&self.events).masked &= !OAES_DISCOVERY_CHANGE;
        }
    }

    /// A reservation change of namespace `namespace_id` concerns this controller's
    /// host: an entry in log 80h and, unless the event is outstanding, a Reservation
    /// Log Page Available event. The namespace's mask may filter it out.
    pub fn reservation_notice(&self, namespace_id: u32, notice: Notification) {
        let mut notices = lock(&self.reservation_notices);
        if notices.mask(namespace_id) & notice.mask_bit() != 0 {
            return;
        }
        notices.count = notices.count.wrapping_add(1).max(1);
        let count = notices.count;
        if notices.entries.len() >= RESERVATION_NOTICES_MAX {
            notices.entries.pop_front();
        }
        notices.entries.push_back((count, notice, namespace_id));
        if !notices.masked {
            notices.masked = true;
            lock(&self.events).pending.push_back(RESERVATION_EVENT);
        }
    }

    /// Log 80h: the oldest unread entry, taken out, with how many remain; the empty
    /// entry when there is none. Reading unmasks the event unless `retain`.
    pub fn reservation_log(&self, retain: bool) -> Vec<u8> {
        let mut notices = lock(&self.reservation_notices);
        if !retain {
            notices.masked = false;
        }
        let entry = notices.entries.pop_front();
        let available = u8::try_from(notices.entries.len()).unwrap_or(u8::MAX);
        match entry {
            Some((count, notice, namespace_id)) => crate::wire::reservation::encode_notification_log(count, Some(notice), available, namespace_id),
            None => crate::wire::reservation::encode_notification_log(0, None, 0, 0),
        }
    }

    /// Feature 82h of one namespace, or of all (`None`, NSID FFFFFFFFh).
    pub fn set_reservation_mask(&self, namespace_id: Option<u32>, mask: u32) {
        let mut notices = lock(&self.reservation_notices);
        match namespace_id {
            Some(id) => {
                notices.masks.insert(id, mask);
            }
            None => {
                notices.masks.clear();
                notices.default_mask = mask;
            }
        }
    }

    pub fn reservation_mask(&self, namespace_id: u32) -> u32 {
        lock(&self.reservation_notices).mask(namespace_id)
    }

    /// Logs a failed command in the Error Information log.
    pub fn log_error(&self, queue_id: u16, command_id: u16, status: Status, namespace_id: u32, lba: u64) {
        let mut errors = lock(&self.errors);
        errors.count = errors.count.saturating_add(1);
        let entry = ErrorEntry { error_count: errors.count, queue_id, command_id, status, namespace_id, lba };
        if errors.newest_last.len() >= ERROR_LOG_ENTRIES {
            errors.newest_last.pop_front();
        }
        errors.newest_last.push_back(entry);
    }

    /// Errors logged since the controller was created.
    pub fn error_count(&self) -> u64 {
        lock(&self.errors).count
    }

    /// Log 01h: the newest error first.
    pub fn error_log(&self) -> Vec<u8> {
        let errors = lock(&self.errors);
        crate::wire::log_page::error_log(errors.newest_last.iter().rev(), ERROR_LOG_ENTRIES)
    }

    pub fn settings(&self) -> Settings {
        *lock(&self.settings)
    }

    pub fn change_settings(&self, change: impl FnOnce(&mut Settings)) {
        change(&mut lock(&self.settings));
    }

    /// Whether any I/O queue is connected in the current reset generation.
    pub fn has_io_queues(&self) -> bool {
        !lock(&self.io_queues).is_empty()
    }

    /// Claims I/O queue `queue_id` in the current reset generation, which it returns;
    /// `None` if the queue is already connected.
    pub fn attach_io_queue(&self, queue_id: u16) -> Option<u32> {
        let mut queues = lock(&self.io_queues);
        let generation = self.reset_generation();
        match queues.entry(queue_id) {
            std::collections::btree_map::Entry::Occupied(_) => None,
            std::collections::btree_map::Entry::Vacant(slot) => Some(*slot.insert(generation)),
        }
    }

    /// Gives up I/O queue `queue_id` as claimed in `generation`: a queue left over from
    /// before a reset never releases the id of the queue that replaced it.
    pub fn detach_io_queue(&self, queue_id: u16, generation: u32) {
        let mut queues = lock(&self.io_queues);
        if queues.get(&queue_id) == Some(&generation) {
            queues.remove(&queue_id);
        }
    }
}

/// `now + timeout`, saturating far in the future instead of overflowing.
fn later(now: Instant, timeout: Duration) -> Instant {
    now.checked_add(timeout).unwrap_or(now)
}

fn keep_alive_timeout(kind: &ControllerKind, keep_alive_ms: u32) -> Option<Duration> {
    match (kind, keep_alive_ms) {
        (ControllerKind::Discovery, 0) => Some(DISCOVERY_KEEP_ALIVE),
        (_, 0) => None,
        // Rounded up to whole seconds, as KAS advertises 1 s granularity.
        (_, ms) => Some(Duration::from_secs(u64::from(ms).div_ceil(1000))),
    }
}
