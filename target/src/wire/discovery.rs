//! The discovery log page, log identifier 70h (NVMe over Fabrics Specification 1.1,
//! section 5.3). Pure; no I/O.

use super::bytes::{put, put_padded, put_u16, put_u64, put_u8};

pub const LOG_HEADER_BYTES: usize = 1024;
pub const LOG_ENTRY_BYTES: usize = 1024;

/// Address families (ADRFAM, NVMe over Fabrics 1.1, Figure 38).
pub const ADDRESS_FAMILY_IPV4: u8 = 1;
pub const ADDRESS_FAMILY_IPV6: u8 = 2;

/// Transport types (TRTYPE, NVMe over Fabrics 1.1, Figure 38): those a discovery log
/// entry of ours names. Our own ports are RDMA; a referral may name a TCP discovery
/// service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportType {
    Rdma = 1,
    Tcp = 3,
}

impl TransportType {
    /// The name nvmetcli and configfs use (`addr_trtype`).
    pub fn name(self) -> &'static str {
        match self {
            TransportType::Rdma => "rdma",
            TransportType::Tcp => "tcp",
        }
    }

    pub fn from_name(name: &str) -> Option<TransportType> {
        [TransportType::Rdma, TransportType::Tcp].into_iter().find(|t| t.name() == name)
    }
}

/// TREQ bits 1:0, the secure channel requirement (NVMe over Fabrics 1.1, Figure 38).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SecureChannel {
    #[default]
    NotSpecified = 0,
    Required = 1,
    NotRequired = 2,
}

impl SecureChannel {
    /// The name nvmetcli and configfs use (`addr_treq`).
    pub fn name(self) -> &'static str {
        match self {
            SecureChannel::NotSpecified => "not specified",
            SecureChannel::Required => "required",
            SecureChannel::NotRequired => "not required",
        }
    }

    pub fn from_name(name: &str) -> Option<SecureChannel> {
        [SecureChannel::NotSpecified, SecureChannel::Required, SecureChannel::NotRequired].into_iter().find(|s| s.name() == name)
    }
}

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
    pub transport: TransportType,
    /// TREQ: the secure channel requirement, with [`TREQ_DISABLE_SQ_FLOW_CONTROL`] for
    /// a port of ours.
    pub transport_requirements: u8,
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

/// TSAS for RDMA (NVMe over Fabrics 1.1, Figure 40): reliable connected QP, no provider
/// type specified, RDMA_CM. TSAS for TCP is SECTYPE 0, no security: all zero.
const TSAS_RDMA: [u8; 3] = [1, 1, 1];

impl LogEntry {
    pub fn encode(&self, out: &mut [u8; LOG_ENTRY_BYTES]) {
        use entry::*;
        out.fill(0);
        put_u8(out, TRTYPE, self.transport as u8);
        put_u8(out, ADRFAM, self.address_family);
        put_u8(out, SUBTYPE, self.subsystem_type as u8);
        put_u8(out, TREQ, self.transport_requirements);
        put_u16(out, PORTID, self.port_id);
        put_u16(out, CNTLID, 0xFFFF); // dynamic controller model
        put_u16(out, ASQSZ, self.admin_queue_entries_max);
        put_padded(out, TRSVCID, 32, self.service_id.as_bytes(), b' ');
        // NQNs stay NUL terminated: at most 255 bytes of text.
        let nqn = self.subsystem_nqn.as_bytes();
        put_padded(out, SUBNQN, 256, nqn.get(..nqn.len().min(255)).unwrap_or_default(), 0);
        put_padded(out, TRADDR, 256, self.address.as_bytes(), b' ');
        if self.transport == TransportType::Rdma {
            put(out, TSAS, &TSAS_RDMA);
        }
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
            transport: TransportType::Rdma,
            transport_requirements: TREQ_DISABLE_SQ_FLOW_CONTROL,
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

    /// A referral to a TCP discovery service over IPv6, as nvmet formats one: subtype
    /// 1, the referral's own PORTID and address, TREQ as configured (no SQ flow control
    /// bit), CNTLID FFFFh, the well-known discovery NQN, TSAS all zero.
    #[test]
    fn referral_entry_golden_bytes() {
        let referral = LogEntry {
            transport: TransportType::Tcp,
            transport_requirements: SecureChannel::NotRequired as u8,
            subsystem_type: SubsystemType::Referral,
            address_family: ADDRESS_FAMILY_IPV6,
            port_id: 0x0102,
            admin_queue_entries_max: 32,
            service_id: "8009".into(),
            subsystem_nqn: "nqn.2014-08.org.nvmexpress.discovery".into(),
            address: "2001:db8::7".into(),
        };
        let mut bytes = [0u8; LOG_ENTRY_BYTES];
        referral.encode(&mut bytes);
        let mut expected = [0u8; LOG_ENTRY_BYTES];
        expected[..10].copy_from_slice(&[3, 2, 1, 2, 0x02, 0x01, 0xFF, 0xFF, 32, 0]);
        expected[32..64].copy_from_slice(format!("{:<32}", "8009").as_bytes());
        expected[256..256 + 36].copy_from_slice(b"nqn.2014-08.org.nvmexpress.discovery");
        expected[512..768].copy_from_slice(format!("{:<256}", "2001:db8::7").as_bytes());
        assert_eq!(bytes, expected);
        assert_eq!(bytes[1024 - 256..], [0u8; 256], "TSAS for TCP: SECTYPE none");

        let rdma = LogEntry { transport: TransportType::Rdma, transport_requirements: 0, address_family: ADDRESS_FAMILY_IPV4, ..referral };
        rdma.encode(&mut bytes);
        assert_eq!(&bytes[0..4], &[1, 1, 1, 0], "TRTYPE RDMA, ADRFAM IPv4, referral, TREQ not specified");
        assert_eq!(&bytes[768..772], &[1, 1, 1, 0], "TSAS for RDMA");
    }

    #[test]
    fn transport_and_secure_channel_names() {
        assert_eq!(TransportType::from_name("tcp"), Some(TransportType::Tcp));
        assert_eq!(TransportType::from_name("rdma").map(TransportType::name), Some("rdma"));
        assert_eq!(TransportType::from_name("fc"), None);
        assert_eq!(SecureChannel::from_name("not required"), Some(SecureChannel::NotRequired));
        assert_eq!(SecureChannel::from_name("required").map(|s| s as u8), Some(1));
        assert_eq!(SecureChannel::from_name("sometimes"), None);
    }

    #[test]
    fn overlong_nqn_stays_terminated() {
        let mut bytes = [0u8; LOG_ENTRY_BYTES];
        entry(&"n".repeat(300)).encode(&mut bytes);
        assert_eq!(bytes[256 + 254], b'n');
        assert_eq!(bytes[256 + 255], 0);
    }
}
