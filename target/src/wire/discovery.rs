//! The discovery log page, log identifier 70h (NVMe over Fabrics Specification 1.1,
//! section 5.3). Pure; no I/O.

use super::bytes::{put, put_padded, put_u16, put_u64, put_u8};

pub const LOG_HEADER_BYTES: usize = 1024;
pub const LOG_ENTRY_BYTES: usize = 1024;

/// Transport types and address families (NVMe over Fabrics 1.1, Figure 38).
pub const TRANSPORT_RDMA: u8 = 1;
pub const ADDRESS_FAMILY_IPV4: u8 = 1;
pub const ADDRESS_FAMILY_IPV6: u8 = 2;

/// Subsystem types in a log entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubsystemType {
    Referral = 1,
    Nvm = 2,
    CurrentDiscovery = 3,
}

/// TREQ bit 2: SQ flow control disable supported.
pub const TREQ_DISABLE_SQ_FLOW_CONTROL: u8 = 1 << 2;

/// One entry of the discovery log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    pub subsystem_type: SubsystemType,
    pub address_family: u8,
    pub port_id: u16,
    pub admin_queue_entries_max: u16,
    pub service_id: String,
    pub subsystem_nqn: String,
    pub address: String,
}

/// Log entry offsets (NVMe over Fabrics 1.1, Figure 38).
mod entry {
    pub const TRTYPE: usize = 0;
    pub const ADRFAM: usize = 1;
    pub const SUBTYPE: usize = 2;
    pub const TREQ: usize = 3;
    pub const PORTID: usize = 4;
    pub const CNTLID: usize = 6;
    pub const ASQSZ: usize = 8;
    pub const TRSVCID: usize = 32;
    pub const SUBNQN: usize = 256;
    pub const TRADDR: usize = 512;
    pub const TSAS: usize = 768;
}

impl LogEntry {
    pub fn encode(&self, out: &mut [u8; LOG_ENTRY_BYTES]) {
        use entry::*;
        out.fill(0);
        put_u8(out, TRTYPE, TRANSPORT_RDMA);
        put_u8(out, ADRFAM, self.address_family);
        put_u8(out, SUBTYPE, self.subsystem_type as u8);
        put_u8(out, TREQ, TREQ_DISABLE_SQ_FLOW_CONTROL);
        put_u16(out, PORTID, self.port_id);
        put_u16(out, CNTLID, 0xFFFF); // dynamic controller model
        put_u16(out, ASQSZ, self.admin_queue_entries_max);
        put_padded(out, TRSVCID, 32, self.service_id.as_bytes(), b' ');
        // NQNs stay NUL terminated: at most 255 bytes of text.
        let nqn = self.subsystem_nqn.as_bytes();
        put_padded(out, SUBNQN, 256, nqn.get(..nqn.len().min(255)).unwrap_or_default(), 0);
        put_padded(out, TRADDR, 256, self.address.as_bytes(), b' ');
        // TSAS for RDMA: QP type RC (1), provider type not specified (1), RDMA_CM (1).
        put(out, TSAS, &[1, 1, 1]);
    }
}

/// Encode the whole log: the header with GENCTR and NUMREC, then the entries.
pub fn encode_log(generation: u64, entries: &[LogEntry]) -> Vec<u8> {
    const GENCTR: usize = 0;
    const NUMREC: usize = 8;
    let mut log = vec![0u8; LOG_HEADER_BYTES];
    put_u64(&mut log, GENCTR, generation);
    put_u64(&mut log, NUMREC, entries.len() as u64);
    for entry in entries {
        let mut bytes = [0u8; LOG_ENTRY_BYTES];
        entry.encode(&mut bytes);
        log.extend_from_slice(&bytes);
    }
    log
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(subsystem_nqn: &str) -> LogEntry {
        LogEntry {
            subsystem_type: SubsystemType::Nvm,
            address_family: ADDRESS_FAMILY_IPV4,
            port_id: 1,
            admin_queue_entries_max: 32,
            service_id: "4420".into(),
            subsystem_nqn: subsystem_nqn.into(),
            address: "192.0.2.1".into(),
        }
    }

    #[test]
    fn header_and_entry_offsets() {
        let log = encode_log(9, &[entry("nqn.test")]);
        assert_eq!(log.len(), 2048);
        assert_eq!(u64::from_le_bytes(log[0..8].try_into().unwrap()), 9);
        assert_eq!(u64::from_le_bytes(log[8..16].try_into().unwrap()), 1);
        let e = &log[1024..];
        assert_eq!(&e[0..4], &[1, 1, 2, 4]);
        assert_eq!(&e[6..10], &[0xFF, 0xFF, 32, 0]);
        assert_eq!(&e[32..38], b"4420  ");
        assert_eq!(&e[256..265], b"nqn.test\0");
        assert_eq!(&e[512..522], b"192.0.2.1 ");
        assert_eq!(&e[768..771], &[1, 1, 1]);
    }

    #[test]
    fn overlong_nqn_stays_terminated() {
        let mut bytes = [0u8; LOG_ENTRY_BYTES];
        entry(&"n".repeat(300)).encode(&mut bytes);
        assert_eq!(bytes[256 + 254], b'n');
        assert_eq!(bytes[256 + 255], 0);
    }
}
