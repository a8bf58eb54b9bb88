//! The 16-byte completion queue entry (NVMe Base Specification 2.0, section 4.6). Pure.

use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::Status;

pub const COMPLETION_BYTES: usize = 16;

/// Status field bit 13: More.
const MORE: u16 = 1 << 13;

/// A completion as sent in a NVMe/RDMA response capsule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct Completion {
    /// Command specific result, Dword 0.
    pub result: U32,
    /// Dword 1, the upper half of 8-byte results (Property Get).
    pub result_upper: U32,
    /// SQHD, Completion Queue Entry Dword 2 bits 15:0.
    pub submission_queue_head: U16,
    /// SQID, Dword 2 bits 31:16.
    pub submission_queue_id: U16,
    pub command_id: U16,
    /// Status field shifted left by one over the phase tag, which fabrics leave 0.
    pub status_and_phase: U16,
}
const _: () = assert!(size_of::<Completion>() == COMPLETION_BYTES);

impl Completion {
    pub fn new(command_id: u16, status: Status) -> Completion {
        Completion {
            command_id: U16::new(command_id),
            status_and_phase: U16::new(status.raw() << 1),
            ..Default::default()
        }
    }

    pub fn with_result(mut self, result: u64) -> Completion {
        self.result = U32::new(result as u32);
        self.result_upper = U32::new((result >> 32) as u32);
        self
    }

    /// The status: code, type, CRD and DNR. The More bit is read by [`Completion::more`].
    pub fn status(&self) -> Status {
        Status::from_raw(self.status_and_phase.get() >> 1 & !MORE)
    }

    /// Sets More (status bit 13): the Error Information log has an entry for this command.
    pub fn with_more(mut self) -> Completion {
        self.status_and_phase = U16::new(self.status_and_phase.get() | MORE << 1);
        self
    }

    pub fn more(&self) -> bool {
        self.status_and_phase.get() >> 1 & MORE != 0
    }

    pub fn result64(&self) -> u64 {
        u64::from(self.result.get()) | u64::from(self.result_upper.get()) << 32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_bytes() {
        let mut completion = Completion::new(0x0102, Status::LBA_RANGE.dnr()).with_result(0x1122_3344_5566_7788);
        completion.submission_queue_head = U16::new(5);
        completion.submission_queue_id = U16::new(1);
        let expected: [u8; 16] =
            [0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0x05, 0x00, 0x01, 0x00, 0x02, 0x01, 0x00, 0x81];
        assert_eq!(completion.as_bytes(), &expected);
        let parsed = Completion::read_from_bytes(&expected).unwrap();
        assert_eq!(parsed.status(), Status::LBA_RANGE.dnr());
        assert_eq!(parsed.result64(), 0x1122_3344_5566_7788);
        assert!(!parsed.more());
        let more = completion.with_more();
        assert_eq!(more.as_bytes()[15], 0xC1, "More is bit 14 of the last half-word");
        assert!(more.more());
        assert_eq!(more.status(), Status::LBA_RANGE.dnr(), "the status leaves More out");
    }
}
