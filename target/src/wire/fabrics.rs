//! Fabrics commands: Connect and its data, Property Get/Set (NVMe over Fabrics
//! Specification 1.1, sections 3.3 and 3.4). Pure parsing; no I/O.

use zerocopy::little_endian::U16;
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::command::RawCommand;
use super::Status;

/// The Connect command's specific fields, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectCommand {
    pub record_format: u16,
    pub queue_id: u16,
    /// SQSIZE converted from 0's based: the number of entries of the submission queue.
    pub queue_entries: u32,
    /// CATTR bit 2: the host asks for SQ flow control to be disabled (SQHD 0xFFFF).
    pub disable_sq_flow_control: bool,
    /// KATO in milliseconds; meaningful on the admin queue only.
    pub keep_alive_timeout_ms: u32,
}

impl ConnectCommand {
    /// Decode CDW10..CDW12 of a Connect command.
    pub fn parse(command: &RawCommand) -> ConnectCommand {
        let cdw10 = command.cdw10.get();
        let cdw11 = command.cdw11.get();
        ConnectCommand {
            record_format: cdw10 as u16,
            queue_id: (cdw10 >> 16) as u16,
            // At most 0xFFFF + 1: no overflow.
            queue_entries: (cdw11 & 0xFFFF).saturating_add(1),
            disable_sq_flow_control: cdw11 & (1 << 18) != 0,
            keep_alive_timeout_ms: command.cdw12.get(),
        }
    }
}

/// Connect command data, 1024 bytes (NVMe over Fabrics 1.1, Figure 20).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct ConnectData {
    pub host_id: [u8; 16],
    /// FFFFh on the admin queue (dynamic controller model); the admin Connect's CNTLID on
    /// I/O queues.
    pub controller_id: U16,
    pub reserved: [u8; 238],
    pub subsystem_nqn: [u8; 256],
    pub host_nqn: [u8; 256],
    pub reserved2: [u8; 256],
}
pub const CONNECT_DATA_BYTES: usize = 1024;
const _: () = assert!(size_of::<ConnectData>() == CONNECT_DATA_BYTES);

/// The CNTLID an admin Connect asks for under the dynamic controller model.
pub const DYNAMIC_CONTROLLER_ID: u16 = 0xFFFF;

impl ConnectData {
    pub fn subsystem_nqn(&self) -> Result<&str, Status> {
        nqn_field(&self.subsystem_nqn)
    }

    pub fn host_nqn(&self) -> Result<&str, Status> {
        nqn_field(&self.host_nqn)
    }

    /// Builder for tests and the loopback host.
    pub fn new(host_id: [u8; 16], controller_id: u16, subsystem_nqn: &str, host_nqn: &str) -> ConnectData {
        let mut data = ConnectData::new_zeroed();
        data.host_id = host_id;
        data.controller_id = U16::new(controller_id);
        copy_nqn(&mut data.subsystem_nqn, subsystem_nqn);
        copy_nqn(&mut data.host_nqn, host_nqn);
        data
    }
}

/// An NQN field must hold UTF-8 text terminated by NUL within its 256 bytes.
fn nqn_field(field: &[u8; 256]) -> Result<&str, Status> {
    let end = field.iter().position(|&b| b == 0).ok_or(Status::CONNECT_INVALID_PARAMETER.dnr())?;
    let text = field.get(..end).and_then(|b| std::str::from_utf8(b).ok()).ok_or(Status::CONNECT_INVALID_PARAMETER.dnr())?;
    if text.is_empty() {
        return Err(Status::CONNECT_INVALID_PARAMETER.dnr());
    }
    Ok(text)
}

fn copy_nqn(field: &mut [u8; 256], nqn: &str) {
    let text = nqn.as_bytes();
    super::bytes::put(field, 0, text.get(..text.len().min(255)).unwrap_or_default());
}

/// Invalid attribute location reported in Dword 0 of a Connect Invalid Parameters
/// completion (NVMe over Fabrics 1.1, Figure 21): IATTR bit 16 selects the data, IPO in
/// bits 15:0 is the byte offset.
pub fn invalid_parameter_location(in_data: bool, offset: u16) -> u32 {
    u32::from(in_data) << 16 | u32::from(offset)
}

/// Property Get and Set, decoded (NVMe over Fabrics 1.1, sections 3.4 and 3.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PropertyAccess {
    /// ATTRIB bit 0: eight bytes instead of four.
    pub eight_bytes: bool,
    pub offset: u32,
    /// The value written (Property Set only).
    pub value: u64,
}

impl PropertyAccess {
    pub fn parse(command: &RawCommand) -> PropertyAccess {
        PropertyAccess {
            eight_bytes: command.cdw10.get() & 0x7 == 1,
            offset: command.cdw11.get(),
            value: u64::from(command.cdw12.get()) | u64::from(command.cdw13.get()) << 32,
        }
    }
}

/// Property offsets (NVMe Base Specification 2.0, section 3.1.3).
pub mod property {
    pub const CAP: u32 = 0x00;
    pub const VS: u32 = 0x08;
    pub const CC: u32 = 0x14;
    pub const CSTS: u32 = 0x1C;
    pub const NSSR: u32 = 0x20;
    pub const CRTO: u32 = 0x68;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::command::{fabrics_type, FABRICS};
    use zerocopy::little_endian::U32;

    fn connect_command(cdw10: u32, cdw11: u32, kato: u32) -> RawCommand {
        let mut command = RawCommand { opcode: FABRICS, flags: 0x40, ..Default::default() };
        command.namespace_id = U32::new(u32::from(fabrics_type::CONNECT));
        command.cdw10 = U32::new(cdw10);
        command.cdw11 = U32::new(cdw11);
        command.cdw12 = U32::new(kato);
        command
    }

    #[test]
    fn admin_connect_as_linux_sends_it() {
        let command = connect_command(0, 31, 5000);
        let connect = ConnectCommand::parse(&command);
        assert_eq!(connect, ConnectCommand {
            record_format: 0,
            queue_id: 0,
            queue_entries: 32,
            disable_sq_flow_control: false,
            keep_alive_timeout_ms: 5000
        });
    }

    #[test]
    fn io_connect_fields() {
        let connect = ConnectCommand::parse(&connect_command(3 << 16, 127 | 1 << 18, 0));
        assert_eq!(connect.queue_id, 3);
        assert_eq!(connect.queue_entries, 128);
        assert!(connect.disable_sq_flow_control);
        assert_eq!(ConnectCommand::parse(&connect_command(1, 0xFFFF, 0)).queue_entries, 65536);
    }

    #[test]
    fn connect_data_golden_offsets() {
        let data = ConnectData::new([7; 16], 0xFFFF, "nqn.sub", "nqn.host");
        let bytes = data.as_bytes();
        assert_eq!(&bytes[0..16], &[7; 16]);
        assert_eq!(&bytes[16..18], &[0xFF, 0xFF]);
        assert_eq!(&bytes[256..264], b"nqn.sub\0");
        assert_eq!(&bytes[512..521], b"nqn.host\0");
        let parsed = ConnectData::read_from_bytes(bytes).unwrap();
        assert_eq!(parsed.subsystem_nqn(), Ok("nqn.sub"));
        assert_eq!(parsed.host_nqn(), Ok("nqn.host"));
    }

    #[test]
    fn unterminated_or_empty_nqn_is_invalid() {
        let mut data = ConnectData::new([0; 16], 0xFFFF, "x", "");
        assert_eq!(data.host_nqn(), Err(Status::CONNECT_INVALID_PARAMETER.dnr()));
        data.subsystem_nqn = [b'a'; 256];
        assert_eq!(data.subsystem_nqn(), Err(Status::CONNECT_INVALID_PARAMETER.dnr()));
        data.subsystem_nqn[0] = 0xFF;
        data.subsystem_nqn[1] = 0;
        assert_eq!(data.subsystem_nqn(), Err(Status::CONNECT_INVALID_PARAMETER.dnr()));
    }

    #[test]
    fn property_fields() {
        let mut command = RawCommand {
            cdw10: U32::new(1),
            cdw11: U32::new(property::CC),
            cdw12: U32::new(0x0046_0001),
            cdw13: U32::new(2),
            ..RawCommand::default()
        };
        let access = PropertyAccess::parse(&command);
        assert!(access.eight_bytes);
        assert_eq!(access.offset, 0x14);
        assert_eq!(access.value, 0x2_0046_0001);
        command.cdw10 = U32::new(0);
        assert!(!PropertyAccess::parse(&command).eight_bytes);
    }

    #[test]
    fn invalid_parameter_location_encoding() {
        assert_eq!(invalid_parameter_location(true, 16), 0x1_0010);
        assert_eq!(invalid_parameter_location(false, 42), 42);
    }
}
