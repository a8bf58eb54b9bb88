//! Get Log Page command fields and the log pages other than discovery (NVMe Base
//! Specification 2.0, sections 5.16.1 and 5.16.2). Pure; no I/O.

use super::bytes::{put_u128, put_u16, put_u32, put_u8};
use super::command::RawCommand;
use super::Status;

/// Log identifiers.
pub mod id {
    pub const SUPPORTED: u8 = 0x00;
    pub const ERROR: u8 = 0x01;
    pub const SMART: u8 = 0x02;
    pub const FIRMWARE_SLOT: u8 = 0x03;
    pub const CHANGED_NAMESPACES: u8 = 0x04;
    pub const COMMAND_EFFECTS: u8 = 0x05;
    pub const ANA: u8 = 0x0C;
    pub const DISCOVERY: u8 = 0x70;
    pub const RESERVATION_NOTIFICATION: u8 = 0x80;
}

/// A decoded Get Log Page request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogRequest {
    pub log_id: u8,
    /// Retain Asynchronous Event (CDW10 bit 15).
    pub retain_event: bool,
    /// NUMD converted from 0's based dwords to bytes.
    pub length_bytes: u64,
    /// LPO in bytes; must be dword aligned.
    pub offset_bytes: u64,
}

impl LogRequest {
    pub fn parse(command: &RawCommand) -> Result<LogRequest, Status> {
        let cdw10 = command.cdw10.get();
        let cdw11 = command.cdw11.get();
        // NUMDU:NUMDL is at most 2^32 - 1, so the 1's based count and the byte length fit.
        let dwords = (u64::from(cdw11 & 0xFFFF) << 16 | u64::from(cdw10 >> 16)).saturating_add(1);
        let offset_bytes = u64::from(command.cdw12.get()) | u64::from(command.cdw13.get()) << 32;
        if offset_bytes & 3 != 0 {
            return Err(Status::INVALID_FIELD.dnr());
        }
        Ok(LogRequest {
            log_id: cdw10 as u8,
            retain_event: cdw10 & (1 << 15) != 0,
            length_bytes: dwords.saturating_mul(4),
            offset_bytes,
        })
    }

    /// The part of `log` this request asks for; an offset past the end is an error.
    pub fn window<'a>(&self, log: &'a [u8]) -> Result<&'a [u8], Status> {
        let start = usize::try_from(self.offset_bytes).map_err(|_| Status::INVALID_FIELD.dnr())?;
        let rest = log.get(start..).ok_or(Status::INVALID_FIELD.dnr())?;
        let len = usize::try_from(self.length_bytes).unwrap_or(usize::MAX).min(rest.len());
        rest.get(..len).ok_or(Status::INVALID_FIELD.dnr())
    }
}

/// Log 00h: a dword per log identifier, bit 0 = supported.
pub fn supported_logs(ids: &[u8]) -> Vec<u8> {
    let mut log = vec![0u8; 1024];
    for &id in ids {
        put_u8(&mut log, usize::from(id) * 4, 1);
    }
    log
}

/// Counters for the SMART / Health Information log (02h), all in their natural units.
#[derive(Clone, Copy, Debug, Default)]
pub struct HealthCounters {
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub read_commands: u64,
    pub write_commands: u64,
    pub power_on_hours: u64,
    /// Errors logged in the Error Information log over the controller's life.
    pub error_log_entries: u64,
}

/// SMART / Health Information field offsets (NVMe Base 2.0, Figure 207).
mod smart {
    pub const BYTES: usize = 512;
    pub const COMPOSITE_TEMPERATURE: usize = 1;
    pub const AVAILABLE_SPARE: usize = 3;
    pub const AVAILABLE_SPARE_THRESHOLD: usize = 4;
    pub const DATA_UNITS_READ: usize = 32;
    pub const DATA_UNITS_WRITTEN: usize = 48;
    pub const HOST_READ_COMMANDS: usize = 64;
    pub const HOST_WRITE_COMMANDS: usize = 80;
    pub const POWER_ON_HOURS: usize = 128;
    pub const ERROR_LOG_ENTRIES: usize = 176;
}

/// Log 02h, 512 bytes. Data units are thousands of 512-byte units, rounded up.
pub fn smart_log(counters: &HealthCounters) -> Vec<u8> {
    use smart::*;
    let mut log = vec![0u8; BYTES];
    let units = |bytes: u64| u128::from((bytes / 512).div_ceil(1000));
    put_u16(&mut log, COMPOSITE_TEMPERATURE, 273 + 40); // kelvin
    put_u8(&mut log, AVAILABLE_SPARE, 100);
    put_u8(&mut log, AVAILABLE_SPARE_THRESHOLD, 10);
    put_u128(&mut log, DATA_UNITS_READ, units(counters.bytes_read));
    put_u128(&mut log, DATA_UNITS_WRITTEN, units(counters.bytes_written));
    put_u128(&mut log, HOST_READ_COMMANDS, u128::from(counters.read_commands));
    put_u128(&mut log, HOST_WRITE_COMMANDS, u128::from(counters.write_commands));
    put_u128(&mut log, POWER_ON_HOURS, u128::from(counters.power_on_hours));
    put_u128(&mut log, ERROR_LOG_ENTRIES, u128::from(counters.error_log_entries));
    log
}

/// One entry of the Error Information log (01h), 64 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorEntry {
    /// Counts every error the controller logged, from 1.
    pub error_count: u64,
    pub queue_id: u16,
    pub command_id: u16,
    pub status: Status,
    pub namespace_id: u32,
    pub lba: u64,
}

pub const ERROR_ENTRY_BYTES: usize = 64;

/// Error Information entry offsets (NVMe Base 2.0, Figure 205).
mod error_entry {
    pub const ERROR_COUNT: usize = 0;
    pub const SQID: usize = 8;
    pub const CID: usize = 10;
    pub const STATUS: usize = 12;
    pub const PARAMETER_ERROR_LOCATION: usize = 14;
    pub const LBA: usize = 16;
    pub const NSID: usize = 24;
}

impl ErrorEntry {
    pub fn encode(&self, out: &mut [u8]) {
        use error_entry::*;
        super::bytes::put_u64(out, ERROR_COUNT, self.error_count);
        put_u16(out, SQID, self.queue_id);
        put_u16(out, CID, self.command_id);
        // Status field over the phase tag (0).
        put_u16(out, STATUS, self.status.raw() << 1);
        // Not given (FFFFh).
        put_u16(out, PARAMETER_ERROR_LOCATION, 0xFFFF);
        super::bytes::put_u64(out, LBA, self.lba);
        put_u32(out, NSID, self.namespace_id);
    }
}

/// Log 01h: `entries`, newest first.
pub fn error_log<'a>(entries: impl Iterator<Item = &'a ErrorEntry>, slots: usize) -> Vec<u8> {
    let mut log = vec![0u8; slots.saturating_mul(ERROR_ENTRY_BYTES)];
    for (chunk, entry) in log.chunks_exact_mut(ERROR_ENTRY_BYTES).zip(entries) {
        entry.encode(chunk);
    }
    log
}

/// Log 03h: one read-only slot holding `revision`.
pub fn firmware_slot_log(revision: &str) -> Vec<u8> {
    const AFI: usize = 0;
    const FRS1: usize = 8;
    let mut log = vec![0u8; 512];
    put_u8(&mut log, AFI, 1); // active firmware in slot 1
    super::bytes::put_padded(&mut log, FRS1, 8, revision.as_bytes(), b' ');
    log
}

/// Log 04h: up to 1024 changed NSIDs; more is reported as FFFFFFFFh in the first entry.
pub fn changed_namespaces_log(namespace_ids: &[u32]) -> Vec<u8> {
    let mut log = vec![0u8; 4096];
    if namespace_ids.len() > 1024 {
        put_u32(&mut log, 0, u32::MAX);
        return log;
    }
    for (chunk, id) in log.chunks_exact_mut(4).zip(namespace_ids) {
        chunk.copy_from_slice(&id.to_le_bytes());
    }
    log
}

/// Log 05h: commands supported and effects. CSUPP is bit 0, LBCC bit 1.
pub fn command_effects_log(admin: &[u8], io: &[(u8, bool)]) -> Vec<u8> {
    // A dword per admin opcode (ACS), then a dword per I/O opcode (IOCS).
    const ACS: usize = 0;
    const IOCS: usize = 1024;
    let mut log = vec![0u8; 4096];
    for &opcode in admin {
        put_u8(&mut log, ACS | (usize::from(opcode) * 4), 1);
    }
    for &(opcode, changes_content) in io {
        put_u8(&mut log, IOCS | (usize::from(opcode) * 4), 1 | u8::from(changes_content) << 1);
    }
    log
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::little_endian::U32;

    fn request(cdw10: u32, cdw11: u32, lpol: u32, lpou: u32) -> Result<LogRequest, Status> {
        let command = RawCommand {
            cdw10: U32::new(cdw10),
            cdw11: U32::new(cdw11),
            cdw12: U32::new(lpol),
            cdw13: U32::new(lpou),
            ..Default::default()
        };
        LogRequest::parse(&command)
    }

    #[test]
    fn discovery_header_read_as_libnvme_sends_it() {
        // NUMDL = 4 (five dwords, 20 bytes), LID 70h.
        let req = request(4 << 16 | 0x70, 0, 0, 0).unwrap();
        assert_eq!(req, LogRequest { log_id: 0x70, retain_event: false, length_bytes: 20, offset_bytes: 0 });
    }

    #[test]
    fn numdu_and_offset_upper_half() {
        let req = request(0xFFFF << 16 | 1 << 15 | 2, 0x1, 8, 1).unwrap();
        assert_eq!(req.length_bytes, 0x2_0000 * 4);
        assert_eq!(req.offset_bytes, (1 << 32) | 8);
        assert!(req.retain_event);
    }

    #[test]
    fn unaligned_offset_is_invalid() {
        assert_eq!(request(0x70, 0, 2, 0), Err(Status::INVALID_FIELD.dnr()));
    }

    #[test]
    fn window_clamps_and_refuses_past_end() {
        let log: Vec<u8> = (0..100).collect();
        let req = |offset, len| LogRequest { log_id: 0, retain_event: false, length_bytes: len, offset_bytes: offset };
        assert_eq!(req(96, 20).window(&log).unwrap(), &[96, 97, 98, 99]);
        assert_eq!(req(100, 4).window(&log).unwrap(), &[] as &[u8]);
        assert_eq!(req(104, 4).window(&log), Err(Status::INVALID_FIELD.dnr()));
        assert_eq!(req(u64::MAX - 3, 4).window(&log), Err(Status::INVALID_FIELD.dnr()));
    }

    #[test]
    fn smart_data_units_round_up() {
        let log = smart_log(&HealthCounters { bytes_written: 512 * 1001, ..Default::default() });
        assert_eq!(u128::from_le_bytes(log[48..64].try_into().unwrap()), 2);
        assert_eq!(log[3], 100);
    }

    #[test]
    fn effects_and_supported_layout() {
        let log = command_effects_log(&[0x06], &[(0x01, true), (0x02, false)]);
        assert_eq!(log[0x06 * 4], 1);
        assert_eq!(log[1024 + 4], 3);
        assert_eq!(log[1024 + 8], 1);
        assert_eq!(supported_logs(&[0, 2])[8], 1);
    }

    #[test]
    fn changed_namespace_overflow_marker() {
        let ids: Vec<u32> = (1..=1025).collect();
        assert_eq!(&changed_namespaces_log(&ids)[0..4], &[0xFF; 4]);
        assert_eq!(&changed_namespaces_log(&[3])[0..8], &[3, 0, 0, 0, 0, 0, 0, 0]);
    }
}
