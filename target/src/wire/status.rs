//! NVMe completion status values (NVMe Base Specification 2.0, section 4.6.1.2) and the
//! NVMe/RDMA CM reject codes (NVMe/RDMA Transport Specification 1.0, section 3.4).
//! Pure data; no I/O.

use std::fmt;

/// A completion status: SC in bits 7:0, SCT in bits 10:8, CRD in 12:11, More (M) in bit 13
/// and Do Not Retry (DNR) in bit 14. Like the Linux kernel's value it excludes the phase
/// tag, which sits below it in Completion Queue Entry Dword 3.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Status(u16);

macro_rules! statuses {
    ($($name:ident = $value:expr, $text:expr;)*) => {
        impl Status {
            $(#[doc = $text] pub const $name: Status = Status($value);)*

            /// The spec's wording for this status code, without flags.
            pub fn description(self) -> &'static str {
                match self.code() {
                    $($value => $text,)*
                    _ => "unknown status",
                }
            }
        }
    };
}

statuses! {
    SUCCESS = 0x000, "Successful Completion";
    INVALID_OPCODE = 0x001, "Invalid Command Opcode";
    INVALID_FIELD = 0x002, "Invalid Field in Command";
    COMMAND_ID_CONFLICT = 0x003, "Command ID Conflict";
    DATA_TRANSFER_ERROR = 0x004, "Data Transfer Error";
    INTERNAL_ERROR = 0x006, "Internal Error";
    ABORT_REQUESTED = 0x007, "Command Abort Requested";
    ABORTED_SQ_DELETION = 0x008, "Command Aborted due to SQ Deletion";
    FUSED_FAILED = 0x009, "Command Aborted due to Failed Fused Command";
    FUSED_MISSING = 0x00A, "Command Aborted due to Missing Fused Command";
    INVALID_NAMESPACE = 0x00B, "Invalid Namespace or Format";
    COMMAND_SEQUENCE_ERROR = 0x00C, "Command Sequence Error";
    SGL_INVALID_LAST = 0x00D, "Invalid SGL Segment Descriptor";
    SGL_INVALID_COUNT = 0x00E, "Invalid Number of SGL Descriptors";
    SGL_INVALID_DATA = 0x00F, "Data SGL Length Invalid";
    SGL_INVALID_METADATA = 0x010, "Metadata SGL Length Invalid";
    SGL_INVALID_TYPE = 0x011, "SGL Descriptor Type Invalid";
    SGL_INVALID_OFFSET = 0x016, "SGL Offset Invalid";
    HOST_ID_INCONSISTENT = 0x018, "Host Identifier Inconsistent Format";
    KEEP_ALIVE_TIMEOUT_INVALID = 0x01A, "Keep Alive Timeout Invalid";
    ABORTED_PREEMPT = 0x01E, "Command Aborted due to Preempt and Abort";
    NAMESPACE_WRITE_PROTECTED = 0x020, "Namespace is Write Protected";
    LBA_RANGE = 0x080, "LBA Out of Range";
    CAPACITY_EXCEEDED = 0x081, "Capacity Exceeded";
    NAMESPACE_NOT_READY = 0x082, "Namespace Not Ready";
    RESERVATION_CONFLICT = 0x083, "Reservation Conflict";
    INVALID_QUEUE_ID = 0x101, "Invalid Queue Identifier";
    INVALID_QUEUE_SIZE = 0x102, "Invalid Queue Size";
    ASYNC_EVENT_LIMIT = 0x105, "Asynchronous Event Request Limit Exceeded";
    INVALID_LOG_PAGE = 0x109, "Invalid Log Page";
    FEATURE_NOT_SAVEABLE = 0x10D, "Feature Identifier Not Saveable";
    FEATURE_NOT_CHANGEABLE = 0x10E, "Feature Not Changeable";
    COMMAND_SIZE_LIMIT = 0x183, "Command Size Limit Exceeded";
    CONNECT_FORMAT = 0x180, "Incompatible Format";
    CONNECT_CONTROLLER_BUSY = 0x181, "Controller Busy";
    CONNECT_INVALID_PARAMETER = 0x182, "Connect Invalid Parameters";
    CONNECT_INVALID_HOST = 0x184, "Connect Invalid Host";
    AUTHENTICATION_REQUIRED = 0x191, "Authentication Required";
    WRITE_FAULT = 0x280, "Write Fault";
    ANA_PERSISTENT_LOSS = 0x301, "Asymmetric Access Persistent Loss";
    ANA_INACCESSIBLE = 0x302, "Asymmetric Access Inaccessible";
    ANA_TRANSITION = 0x303, "Asymmetric Access Transition";
    UNRECOVERED_READ_ERROR = 0x281, "Unrecovered Read Error";
    COMPARE_FAILURE = 0x285, "Compare Failure";
    ACCESS_DENIED = 0x286, "Access Denied";
}

impl Status {
    const DO_NOT_RETRY: u16 = 1 << 14;
    const CODE_MASK: u16 = 0x07FF;

    /// The same status with Do Not Retry set: retrying the command cannot succeed.
    pub const fn dnr(self) -> Status {
        Status(self.0 | Self::DO_NOT_RETRY)
    }

    /// Status Code Type and Status Code without the CRD, M and DNR flags.
    pub const fn code(self) -> u16 {
        self.0 & Self::CODE_MASK
    }

    /// Whether DNR is set.
    pub const fn is_dnr(self) -> bool {
        self.0 & Self::DO_NOT_RETRY != 0
    }

    pub const fn is_success(self) -> bool {
        self.code() == 0
    }

    /// The raw value, phase bit excluded.
    pub const fn raw(self) -> u16 {
        self.0
    }

    pub const fn from_raw(value: u16) -> Status {
        Status(value & 0x7FFF)
    }
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Status({:#05x} {}{})", self.code(), self.description(), if self.is_dnr() { ", DNR" } else { "" })
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Status values of the NVMe/RDMA CM reject private data (`sts`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum RejectStatus {
    InvalidLength = 0x01,
    InvalidRecordFormat = 0x02,
    InvalidQueueId = 0x03,
    InvalidHostSendQueueSize = 0x04,
    InvalidHostReceiveQueueSize = 0x05,
    NoResources = 0x06,
    InvalidIrd = 0x07,
    InvalidOrd = 0x08,
    InvalidControllerId = 0x09,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dnr_sets_bit_14_and_keeps_code() {
        let status = Status::INVALID_FIELD.dnr();
        assert_eq!(status.raw(), 0x4002);
        assert_eq!(status.code(), 0x002);
        assert!(status.is_dnr());
        assert!(!Status::INVALID_FIELD.is_dnr());
    }

    #[test]
    fn command_specific_codes_carry_their_type() {
        assert_eq!(Status::CONNECT_INVALID_HOST.raw() >> 8, 1, "SCT 1: command specific");
        assert_eq!(Status::LBA_RANGE.raw() >> 8, 0, "SCT 0: generic");
        assert_eq!(Status::WRITE_FAULT.raw() >> 8, 2, "SCT 2: media");
    }

    #[test]
    fn from_raw_drops_bit_15() {
        assert_eq!(Status::from_raw(0xC002), Status::INVALID_FIELD.dnr());
    }

    #[test]
    fn description_ignores_flags() {
        assert_eq!(Status::LBA_RANGE.dnr().description(), "LBA Out of Range");
        assert_eq!(Status::from_raw(0x7FF).description(), "unknown status");
    }
}
