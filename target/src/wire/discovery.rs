//! The discovery log page, log identifier 70h (NVMe over Fabrics Specification 1.1,
//! section 5.3). Pure; no I/O.

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

impl LogEntry {
    pub fn encode(&self, out: &mut [u8; LOG_ENTRY_BYTES]) {
        out.fill(0);
        out[0] = TRANSPORT_RDMA;
        out[1] = self.address_family;
        out[2] = self.subsystem_type as u8;
        out[3] = TREQ_DISABLE_SQ_FLOW_CONTROL;
        out[4..6].copy_from_slice(&self.port_id.to_le_bytes());
        out[6..8].copy_from_slice(&0xFFFFu16.to_le_bytes());
        out[8..10].copy_from_slice(&self.admin_queue_entries_max.to_le_bytes());
        padded(&mut out[32..64], &self.service_id, b' ');
        padded(&mut out[256..512], &self.subsystem_nqn, 0);
        padded(&mut out[512..768], &self.address, b' ');
        // TSAS for RDMA: QP type RC (1), provider type not specified (1), RDMA_CM (1).
        out[768] = 1;
        out[769] = 1;
        out[770] = 1;
    }
}

fn padded(field: &mut [u8], value: &str, pad: u8) {
    field.fill(pad);
    let len = value.len().min(field.len());
    field[..len].copy_from_slice(&value.as_bytes()[..len]);
    if pad == 0 && len == field.len() {
        if let Some(last) = field.last_mut() {
            *last = 0;
        }
    }
}

/// Encode the whole log: the header with GENCTR and NUMREC, then the entries.
pub fn encode_log(generation: u64, entries: &[LogEntry]) -> Vec<u8> {
    let mut log = vec![0u8; LOG_HEADER_BYTES + entries.len() * LOG_ENTRY_BYTES];
    log[0..8].copy_from_slice(&generation.to_le_bytes());
    log[8..16].copy_from_slice(&(entries.len() as u64).to_le_bytes());
    for (entry, chunk) in entries.iter().zip(log[LOG_HEADER_BYTES..].chunks_exact_mut(LOG_ENTRY_BYTES)) {
        let mut bytes = [0u8; LOG_ENTRY_BYTES];
        entry.encode(&mut bytes);
        chunk.copy_from_slice(&bytes);
    }
    log
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_entry_offsets() {
        let entry = LogEntry {
            subsystem_type: SubsystemType::Nvm,
            address_family: ADDRESS_FAMILY_IPV4,
            port_id: 1,
            admin_queue_entries_max: 32,
            service_id: "4420".into(),
            subsystem_nqn: "nqn.test".into(),
            address: "192.0.2.1".into(),
        };
        let log = encode_log(9, &[entry]);
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
        let mut field = [1u8; 8];
        padded(&mut field, "0123456789", 0);
        assert_eq!(&field, b"0123456\0");
    }
}
