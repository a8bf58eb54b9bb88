//! Reservation commands' fields and data structures (NVMe Base Specification 2.0,
//! sections 7.2-7.5 and 5.16.1.24; NVM Command Set 1.0 for the opcodes). Pure data.

use super::bytes::{get, put, put_u16, put_u32, put_u64, put_u8};

/// Reservation types (RTYPE).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReservationType {
    WriteExclusive = 1,
    ExclusiveAccess = 2,
    WriteExclusiveRegistrantsOnly = 3,
    ExclusiveAccessRegistrantsOnly = 4,
    WriteExclusiveAllRegistrants = 5,
    ExclusiveAccessAllRegistrants = 6,
}

impl ReservationType {
    pub fn from_wire(value: u8) -> Option<ReservationType> {
        use ReservationType::*;
        Some(match value {
            1 => WriteExclusive,
            2 => ExclusiveAccess,
            3 => WriteExclusiveRegistrantsOnly,
            4 => ExclusiveAccessRegistrantsOnly,
            5 => WriteExclusiveAllRegistrants,
            6 => ExclusiveAccessAllRegistrants,
            _ => return None,
        })
    }

    /// Every registrant holds the reservation, not only the one that acquired it.
    pub fn all_registrants(self) -> bool {
        matches!(self, ReservationType::WriteExclusiveAllRegistrants | ReservationType::ExclusiveAccessAllRegistrants)
    }

    /// Registrants other than the holder may use the namespace as the holder does.
    pub fn registrants_have_access(self) -> bool {
        !matches!(self, ReservationType::WriteExclusive | ReservationType::ExclusiveAccess)
    }

    /// Reads are limited too, not only writes.
    pub fn exclusive_access(self) -> bool {
        matches!(self, ReservationType::ExclusiveAccess | ReservationType::ExclusiveAccessRegistrantsOnly | ReservationType::ExclusiveAccessAllRegistrants)
    }
}

/// RESCAP in Identify Namespace: Persist Through Power Loss (bit 0), one bit per
/// reservation type (bits 1-6), and Ignore Existing Key as revision 1.3 defines it
/// (bit 7: Acquire and Release with IEKEY set are refused with Invalid Field, as nvmet
/// and SPDK do).
pub const RESCAP_TYPES: u8 = 0x7E;
pub const RESCAP_PERSIST_THROUGH_POWER_LOSS: u8 = 1;
pub const RESCAP_IGNORE_EXISTING_KEY_1_3: u8 = 1 << 7;

/// Reservation Register Action (RREGA, CDW10 bits 2:0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegisterAction {
    Register,
    Unregister,
    Replace,
}

/// Change Persist Through Power Loss State (CPTPL, CDW10 bits 31:30).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PersistChange {
    Keep,
    /// Reservations are released and registrants cleared on a power loss.
    Clear,
    /// Reservations and registrants persist across a power loss.
    Set,
}

/// A Reservation Register command's Dword 10.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Register {
    pub action: RegisterAction,
    pub ignore_existing_key: bool,
    pub persist: PersistChange,
}

impl Register {
    /// `None` for a reserved action or CPTPL value.
    pub fn parse(cdw10: u32) -> Option<Register> {
        let action = match cdw10 & 7 {
            0 => RegisterAction::Register,
            1 => RegisterAction::Unregister,
            2 => RegisterAction::Replace,
            _ => return None,
        };
        let persist = match cdw10 >> 30 {
            0 => PersistChange::Keep,
            2 => PersistChange::Clear,
            3 => PersistChange::Set,
            _ => return None,
        };
        Some(Register { action, ignore_existing_key: cdw10 & 1 << 3 != 0, persist })
    }
}

/// Reservation Acquire Action (RACQA, CDW10 bits 2:0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcquireAction {
    Acquire,
    Preempt,
    PreemptAndAbort,
}

/// Reservation Release Action (RRELA, CDW10 bits 2:0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReleaseAction {
    Release,
    Clear,
}

/// Dword 10 of Acquire and Release: the action, IEKEY (bit 3) and RTYPE (bits 15:8) as
/// sent, left to the command to judge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ActionWord {
    pub action: u8,
    pub ignore_existing_key: bool,
    pub rtype: u8,
}

impl ActionWord {
    pub fn parse(cdw10: u32) -> ActionWord {
        ActionWord { action: (cdw10 & 7) as u8, ignore_existing_key: cdw10 & 1 << 3 != 0, rtype: (cdw10 >> 8) as u8 }
    }

    pub fn acquire(&self) -> Option<AcquireAction> {
        match self.action {
            0 => Some(AcquireAction::Acquire),
            1 => Some(AcquireAction::Preempt),
            2 => Some(AcquireAction::PreemptAndAbort),
            _ => None,
        }
    }

    pub fn release(&self) -> Option<ReleaseAction> {
        match self.action {
            0 => Some(ReleaseAction::Release),
            1 => Some(ReleaseAction::Clear),
            _ => None,
        }
    }
}

/// Bytes of the data each command takes from the host: two keys for Register (CRKEY,
/// NRKEY) and Acquire (CRKEY, PRKEY), one for Release (CRKEY).
pub const TWO_KEYS_BYTES: u32 = 16;
pub const ONE_KEY_BYTES: u32 = 8;

/// The keys in a command's data: the first and, for two-key data, the second.
pub fn keys(data: &[u8]) -> (u64, u64) {
    let first = get::<8>(data, 0).map_or(0, u64::from_le_bytes);
    let second = get::<8>(data, 8).map_or(0, u64::from_le_bytes);
    (first, second)
}

/// One registrant as Reservation Report lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegisteredController {
    pub host_id: [u8; 16],
    pub key: u64,
    pub holds_reservation: bool,
}

/// The header of the Reservation Status data structure; the extended one is 64 bytes.
const STATUS_EXTENDED_HEADER_BYTES: usize = 64;
/// A Registered Controller Extended Data Structure.
const REGISTERED_CONTROLLER_EXTENDED_BYTES: usize = 64;
/// CNTLID FFFFh: the dynamic controller model does not tie a registrant to one
/// controller.
const CONTROLLER_ID_DYNAMIC: u16 = 0xFFFF;

/// Reservation Report with the extended data structure (EDS), cut to `len_bytes`.
pub fn encode_report(generation: u32, rtype: Option<ReservationType>, persist: bool, registrants: &[RegisteredController], len_bytes: usize) -> Vec<u8> {
    let full = STATUS_EXTENDED_HEADER_BYTES.saturating_add(registrants.len().saturating_mul(REGISTERED_CONTROLLER_EXTENDED_BYTES));
    let mut data = vec![0u8; full.max(len_bytes)];
    put_u32(&mut data, 0, generation);
    put_u8(&mut data, 4, rtype.map_or(0, |t| t as u8));
    put_u16(&mut data, 5, u16::try_from(registrants.len()).unwrap_or(u16::MAX));
    put_u8(&mut data, 9, u8::from(persist));
    for (index, registrant) in registrants.iter().enumerate() {
        let at = STATUS_EXTENDED_HEADER_BYTES.saturating_add(index.saturating_mul(REGISTERED_CONTROLLER_EXTENDED_BYTES));
        put_u16(&mut data, at, CONTROLLER_ID_DYNAMIC);
        put_u8(&mut data, at.saturating_add(2), u8::from(registrant.holds_reservation));
        put_u64(&mut data, at.saturating_add(8), registrant.key);
        put(&mut data, at.saturating_add(16), &registrant.host_id);
    }
    data.truncate(len_bytes);
    data
}

/// Reservation Notification log page types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notification {
    RegistrationPreempted = 1,
    ReservationReleased = 2,
    ReservationPreempted = 3,
}

impl Notification {
    /// Its bit in the Reservation Notification Mask (feature 82h): REGPRE bit 1,
    /// RESREL bit 2, RESPRE bit 3.
    pub fn mask_bit(self) -> u32 {
        1 << (self as u32)
    }
}

/// The mask bits feature 82h takes.
pub const NOTIFICATION_MASK_ALL: u32 = 0b1110;

/// Log 80h: one entry, 64 bytes. A count of 0 with type 0 is the empty log.
pub fn encode_notification_log(count: u64, kind: Option<Notification>, available: u8, namespace_id: u32) -> Vec<u8> {
    let mut log = vec![0u8; 64];
    put_u64(&mut log, 0, count);
    put_u8(&mut log, 8, kind.map_or(0, |k| k as u8));
    put_u8(&mut log, 9, available);
    put_u32(&mut log, 12, namespace_id);
    log
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_dword_10_reads_action_iekey_and_cptpl() {
        assert_eq!(Register::parse(0), Some(Register { action: RegisterAction::Register, ignore_existing_key: false, persist: PersistChange::Keep }));
        assert_eq!(Register::parse(2 | 8 | 3 << 30), Some(Register { action: RegisterAction::Replace, ignore_existing_key: true, persist: PersistChange::Set }));
        assert_eq!(Register::parse(1 | 2 << 30).map(|r| r.persist), Some(PersistChange::Clear));
        assert_eq!(Register::parse(3), None, "RREGA 3 is reserved");
        assert_eq!(Register::parse(1 << 30), None, "CPTPL 01b is reserved");
    }

    #[test]
    fn acquire_and_release_words() {
        let word = ActionWord::parse(2 | 6 << 8);
        assert_eq!(word.acquire(), Some(AcquireAction::PreemptAndAbort));
        assert_eq!(word.release(), None);
        assert_eq!(ReservationType::from_wire(word.rtype), Some(ReservationType::ExclusiveAccessAllRegistrants));
        assert_eq!(ReservationType::from_wire(0), None);
        assert_eq!(ReservationType::from_wire(7), None);
        assert!(ActionWord::parse(8).ignore_existing_key);
    }

    #[test]
    fn report_layout_is_the_extended_structure() {
        let registrants = [
            RegisteredController { host_id: [0x11; 16], key: 0xAABB, holds_reservation: true },
            RegisteredController { host_id: [0x22; 16], key: 0xCCDD, holds_reservation: false },
        ];
        let data = encode_report(7, Some(ReservationType::WriteExclusive), true, &registrants, 4096);
        assert_eq!(data.len(), 4096);
        assert_eq!(&data[0..4], &7u32.to_le_bytes(), "GEN");
        assert_eq!(data[4], 1, "RTYPE");
        assert_eq!(&data[5..7], &2u16.to_le_bytes(), "REGCTL");
        assert_eq!(data[9], 1, "PTPLS");
        assert_eq!(&data[64..66], &[0xFF, 0xFF], "CNTLID dynamic");
        assert_eq!(data[66], 1, "RCSTS: holds the reservation");
        assert_eq!(&data[72..80], &0xAABBu64.to_le_bytes(), "RKEY");
        assert_eq!(&data[80..96], &[0x11; 16], "HOSTID");
        assert_eq!(data[130], 0);
        assert_eq!(&data[136..144], &0xCCDDu64.to_le_bytes());
        // A short buffer gets the start of the structure, REGCTL still counting all.
        let short = encode_report(7, None, false, &registrants, 16);
        assert_eq!(short.len(), 16);
        assert_eq!(&short[5..7], &2u16.to_le_bytes());
    }

    #[test]
    fn notification_log_entry() {
        let log = encode_notification_log(5, Some(Notification::ReservationReleased), 2, 9);
        assert_eq!(&log[0..8], &5u64.to_le_bytes());
        assert_eq!(log[8], 2);
        assert_eq!(log[9], 2);
        assert_eq!(&log[12..16], &9u32.to_le_bytes());
        assert_eq!(Notification::RegistrationPreempted.mask_bit() | Notification::ReservationReleased.mask_bit() | Notification::ReservationPreempted.mask_bit(), NOTIFICATION_MASK_ALL);
    }
}
