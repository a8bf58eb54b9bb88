//! The 64-byte submission queue entry (NVMe Base Specification 2.0, section 4.2) with named
//! accessors for its packed fields, and the opcodes this target knows. Pure; no I/O.

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::sgl::{DataPointer, RawSglDescriptor};
use super::Status;

/// Size of a command capsule without in-capsule data.
pub const COMMAND_BYTES: usize = 64;

/// A command as it arrives in a capsule. Fields that pack several values have accessors.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RawCommand {
    pub opcode: u8,
    /// FUSE in bits 1:0, PSDT in bits 7:6.
    pub flags: u8,
    pub command_id: U16,
    /// NSID for admin and I/O commands; for Fabrics commands byte 4 is FCTYPE.
    pub namespace_id: U32,
    pub cdw2: U32,
    pub cdw3: U32,
    pub metadata_pointer: U64,
    pub data_pointer: RawSglDescriptor,
    pub cdw10: U32,
    pub cdw11: U32,
    pub cdw12: U32,
    pub cdw13: U32,
    pub cdw14: U32,
    pub cdw15: U32,
}
const _: () = assert!(size_of::<RawCommand>() == COMMAND_BYTES);

/// PSDT 01b: SGLs for the data, metadata pointer is a single contiguous buffer. The only
/// value a NVMe/RDMA host may use.
const PSDT_SGL_METABUF: u8 = 0x40;
const PSDT_MASK: u8 = 0xC0;
const FUSE_MASK: u8 = 0x03;

impl RawCommand {
    /// Reads a command from the start of a capsule; `None` if shorter than 64 bytes.
    pub fn from_capsule(capsule: &[u8]) -> Option<RawCommand> {
        RawCommand::read_from_prefix(capsule).ok().map(|(command, _)| command)
    }

    /// FCTYPE, byte 4 of a Fabrics command (opcode 7Fh).
    pub fn fabrics_type(&self) -> u8 {
        self.namespace_id.get() as u8
    }

    /// FUSE, bits 1:0 of byte 1.
    pub fn fuse(&self) -> u8 {
        self.flags & FUSE_MASK
    }

    /// Checks what every NVMe over Fabrics command must satisfy: SGLs (PSDT 01b). Fused
    /// operations are for the I/O queue to judge.
    pub fn check_flags(&self) -> Result<(), Status> {
        if self.flags & PSDT_MASK != PSDT_SGL_METABUF {
            return Err(Status::INVALID_FIELD.dnr());
        }
        Ok(())
    }

    pub fn data(&self, in_capsule_limit_bytes: u32) -> Result<DataPointer, Status> {
        self.data_pointer.parse(in_capsule_limit_bytes)
    }

    /// Starting LBA, Command Dwords 10 and 11 of Read, Write, Write Zeroes.
    pub fn starting_lba(&self) -> u64 {
        u64::from(self.cdw10.get()) | (u64::from(self.cdw11.get()) << 32)
    }

    /// Number of Logical Blocks, converted from the 0's based NLB in CDW12 bits 15:0.
    pub fn block_count(&self) -> u32 {
        (self.cdw12.get() & 0xFFFF).saturating_add(1)
    }

    /// Force Unit Access, CDW12 bit 30.
    pub fn force_unit_access(&self) -> bool {
        self.cdw12.get() & (1 << 30) != 0
    }

    /// Deallocate, CDW12 bit 25 of Write Zeroes.
    pub fn write_zeroes_deallocate(&self) -> bool {
        self.cdw12.get() & (1 << 25) != 0
    }
}

/// Admin command opcodes (NVMe Base Specification 2.0, Figure 28).
pub mod admin {
    pub const GET_LOG_PAGE: u8 = 0x02;
    pub const IDENTIFY: u8 = 0x06;
    pub const ABORT: u8 = 0x08;
    pub const SET_FEATURES: u8 = 0x09;
    pub const GET_FEATURES: u8 = 0x0A;
    pub const ASYNC_EVENT_REQUEST: u8 = 0x0C;
    pub const KEEP_ALIVE: u8 = 0x18;
}

/// NVM command set I/O opcodes (NVM Command Set Specification 1.0, Figure 12).
pub mod io {
    pub const FLUSH: u8 = 0x00;
    pub const WRITE: u8 = 0x01;
    pub const READ: u8 = 0x02;
    pub const COMPARE: u8 = 0x05;
    pub const WRITE_ZEROES: u8 = 0x08;
    pub const DATASET_MANAGEMENT: u8 = 0x09;
    pub const VERIFY: u8 = 0x0C;
    pub const RESERVATION_REGISTER: u8 = 0x0D;
    pub const RESERVATION_REPORT: u8 = 0x0E;
    pub const RESERVATION_ACQUIRE: u8 = 0x11;
    pub const RESERVATION_RELEASE: u8 = 0x15;
    pub const COPY: u8 = 0x19;
}

/// FUSE values (command Dword 0 bits 9:8).
pub mod fuse {
    pub const NONE: u8 = 0;
    pub const FIRST: u8 = 1;
    pub const SECOND: u8 = 2;
}

/// The Fabrics command opcode; the command is named by FCTYPE.
pub const FABRICS: u8 = 0x7F;

/// Fabrics command types (NVMe over Fabrics Specification 1.1, Figure 9).
pub mod fabrics_type {
    pub const PROPERTY_SET: u8 = 0x00;
    pub const CONNECT: u8 = 0x01;
    pub const PROPERTY_GET: u8 = 0x04;
    pub const AUTHENTICATION_SEND: u8 = 0x05;
    pub const AUTHENTICATION_RECEIVE: u8 = 0x06;
    pub const DISCONNECT: u8 = 0x08;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Read of 8 blocks at LBA 0x1_0000_0010 on NSID 1, command id 0x0203, keyed SGL.
    fn golden_read() -> [u8; 64] {
        let mut bytes = [0u8; 64];
        bytes[0] = io::READ;
        bytes[1] = 0x40;
        bytes[2..4].copy_from_slice(&0x0203u16.to_le_bytes());
        bytes[4..8].copy_from_slice(&1u32.to_le_bytes());
        bytes[24..32].copy_from_slice(&0x1000u64.to_le_bytes());
        bytes[32..35].copy_from_slice(&[0x00, 0x10, 0x00]);
        bytes[35..39].copy_from_slice(&0x1234u32.to_le_bytes());
        bytes[39] = 0x40;
        bytes[40..44].copy_from_slice(&0x10u32.to_le_bytes());
        bytes[44..48].copy_from_slice(&1u32.to_le_bytes());
        bytes[48..52].copy_from_slice(&(7u32 | 1 << 30).to_le_bytes());
        bytes
    }

    #[test]
    fn golden_read_fields() {
        let command = RawCommand::from_capsule(&golden_read()).unwrap();
        assert_eq!(command.opcode, io::READ);
        assert_eq!(command.command_id.get(), 0x0203);
        assert_eq!(command.namespace_id.get(), 1);
        assert_eq!(command.starting_lba(), 0x1_0000_0010);
        assert_eq!(command.block_count(), 8);
        assert!(command.force_unit_access());
        assert_eq!(command.check_flags(), Ok(()));
        assert_eq!(command.data(0).unwrap().length_bytes(), 4096);
        assert_eq!(command.as_bytes(), &golden_read());
    }

    #[test]
    fn short_capsule_is_refused() {
        assert!(RawCommand::from_capsule(&golden_read()[..63]).is_none());
        assert!(RawCommand::from_capsule(&[]).is_none());
    }

    #[test]
    fn block_count_is_one_based() {
        let mut command = RawCommand { cdw12: U32::new(0xFFFF), ..RawCommand::default() };
        assert_eq!(command.block_count(), 65536);
        command.cdw12 = U32::new(0xFFFF_0000);
        assert_eq!(command.block_count(), 1, "upper bits are not NLB");
    }

    #[test]
    fn prp_commands_are_refused() {
        let mut command = RawCommand::from_capsule(&golden_read()).unwrap();
        for flags in [0x00, 0x80, 0xC0, 0x01, 0x82] {
            command.flags = flags;
            assert_eq!(command.check_flags(), Err(Status::INVALID_FIELD.dnr()), "flags {flags:#x}");
        }
        command.flags = 0x41;
        assert_eq!(command.check_flags(), Ok(()), "fused: the queue judges");
        assert_eq!(command.fuse(), fuse::FIRST);
    }

    #[test]
    fn fabrics_type_is_byte_4() {
        let mut bytes = [0u8; 64];
        bytes[0] = FABRICS;
        bytes[4] = fabrics_type::CONNECT;
        assert_eq!(RawCommand::from_capsule(&bytes).unwrap().fabrics_type(), fabrics_type::CONNECT);
    }
}
