//! Identify data structures the target returns (NVMe Base Specification 2.0,
//! section 5.17.2; NVM Command Set Specification 1.0, section 4.1.5). Each builder writes
//! named fields at their spec offsets into a 4096-byte page. Pure; no I/O.

use super::bytes;

/// Every Identify data structure is 4096 bytes.
pub const IDENTIFY_BYTES: usize = 4096;

/// CNS values (NVMe Base Specification 2.0, Figure 274).
pub mod cns {
    pub const NAMESPACE: u8 = 0x00;
    pub const CONTROLLER: u8 = 0x01;
    pub const ACTIVE_NAMESPACES: u8 = 0x02;
    pub const NAMESPACE_DESCRIPTORS: u8 = 0x03;
    pub const CSI_NAMESPACE: u8 = 0x05;
    pub const CSI_CONTROLLER: u8 = 0x06;
    pub const CSI_ACTIVE_NAMESPACES: u8 = 0x07;
    pub const INDEPENDENT_NAMESPACE: u8 = 0x08;
}

/// Command Set Identifier of the NVM command set.
pub const CSI_NVM: u8 = 0;

/// A 4096-byte page with little-endian field writers.
pub struct Page(pub Box<[u8; IDENTIFY_BYTES]>);

impl Default for Page {
    fn default() -> Self {
        Page(Box::new([0; IDENTIFY_BYTES]))
    }
}

impl Page {
    pub fn u8(&mut self, offset: usize, value: u8) -> &mut Self {
        bytes::put_u8(&mut self.0[..], offset, value);
        self
    }
    pub fn u16(&mut self, offset: usize, value: u16) -> &mut Self {
        bytes::put_u16(&mut self.0[..], offset, value);
        self
    }
    pub fn u32(&mut self, offset: usize, value: u32) -> &mut Self {
        bytes::put_u32(&mut self.0[..], offset, value);
        self
    }
    pub fn u64(&mut self, offset: usize, value: u64) -> &mut Self {
        bytes::put_u64(&mut self.0[..], offset, value);
        self
    }
    pub fn bytes(&mut self, offset: usize, value: &[u8]) -> &mut Self {
        bytes::put(&mut self.0[..], offset, value);
        self
    }
    /// An ASCII field padded with spaces, as SN, MN and FR are.
    pub fn ascii(&mut self, offset: usize, width: usize, value: &str) -> &mut Self {
        bytes::put_padded(&mut self.0[..], offset, width, value.as_bytes(), b' ');
        self
    }
}

/// Controller type (CNTRLTYPE).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControllerType {
    Io = 1,
    Discovery = 2,
}

/// The values this target fills into Identify Controller.
#[derive(Clone, Debug)]
pub struct ControllerIdentity<'a> {
    pub controller_id: u16,
    pub controller_type: ControllerType,
    pub serial: &'a str,
    pub model: &'a str,
    pub firmware: &'a str,
    pub subsystem_nqn: &'a str,
    /// MDTS as a power of two in units of the 4 KiB minimum page size.
    pub max_transfer_shift: u8,
    pub version: u32,
    pub keep_alive_granularity_100ms: u16,
    pub max_commands: u16,
    pub namespace_count: u32,
    pub volatile_write_cache: bool,
    /// IOCCSZ in 16-byte units: 64-byte command plus in-capsule data.
    pub command_capsule_units: u32,
    /// Whether SGLs may describe data at an offset inside the capsule (SGLS bit 20).
    pub in_capsule_data: bool,
    pub async_event_limit: u8,
    /// Error Information log entries, 0's based (ELPE).
    pub error_log_entries: u8,
    /// OAES: the notices this controller raises (and the host may enable).
    pub async_event_notices: u32,
    /// IEEE OUI of the subsystem's vendor, least significant byte first on the wire.
    pub ieee_oui: u32,
}

/// Identify Controller field offsets (NVMe Base Specification 2.0, Figure 275).
mod controller {
    pub const VID: usize = 0;
    pub const SN: usize = 4;
    pub const MN: usize = 24;
    pub const FR: usize = 64;
    pub const RAB: usize = 72;
    pub const IEEE: usize = 73;
    pub const CMIC: usize = 76;
    pub const MDTS: usize = 77;
    pub const CNTLID: usize = 78;
    pub const VER: usize = 80;
    pub const OAES: usize = 92;
    pub const CTRATT: usize = 96;
    pub const CNTRLTYPE: usize = 111;
    pub const ACL: usize = 258;
    pub const AERL: usize = 259;
    pub const FRMW: usize = 260;
    pub const LPA: usize = 261;
    pub const ELPE: usize = 262;
    pub const KAS: usize = 320;
    pub const ANATT: usize = 342;
    pub const ANACAP: usize = 343;
    pub const ANAGRPMAX: usize = 344;
    pub const NANAGRPID: usize = 348;
    pub const SQES: usize = 512;
    pub const CQES: usize = 513;
    pub const MAXCMD: usize = 514;
    pub const NN: usize = 516;
    pub const ONCS: usize = 520;
    pub const FUSES: usize = 522;
    pub const VWC: usize = 525;
    pub const ACWU: usize = 532;
    pub const OCFS: usize = 534;
    pub const SGLS: usize = 536;
    pub const MNAN: usize = 540;
    pub const SUBNQN: usize = 768;
    pub const IOCCSZ: usize = 1792;
    pub const IORCSZ: usize = 1796;
    pub const ICDOFF: usize = 1800;
    pub const FCATT: usize = 1802;
    pub const MSDBD: usize = 1803;
    pub const PSD0: usize = 2048;
}

/// OAES bit 8: Namespace Attribute Notices.
pub const OAES_NAMESPACE_ATTRIBUTE: u32 = 1 << 8;
/// OAES bit 11: Asymmetric Namespace Access Change Notices.
pub const OAES_ANA_CHANGE: u32 = 1 << 11;
/// OAES bit 31: Discovery Log Page Change Notices.
pub const OAES_DISCOVERY_CHANGE: u32 = 1 << 31;
/// CTRATT bit 0: 128-bit Host Identifier support (HIDS), which fabrics require.
pub const CTRATT_HOST_ID_128: u32 = 1;
/// CTRATT bit 6: Traffic Based Keep Alive support (TBKAS).
pub const CTRATT_TRAFFIC_BASED_KEEP_ALIVE: u32 = 1 << 6;
/// Asynchronous Event Configuration bits 7:0: the SMART / Health critical warnings,
/// which every controller lets the host enable.
pub const AEC_CRITICAL_WARNINGS: u32 = 0xFF;
/// VWC bits 2:1 = 10b: Flush does not take the broadcast NSID.
const VWC_FLUSH_NO_BROADCAST: u8 = 2 << 1;
/// ONCS: the optional NVM commands served: Compare (bit 0), Dataset Management (2),
/// Write Zeroes (3), Save and Select in Set and Get Features (4), Reservations (5),
/// Verify (7), Copy (8).
pub const OPTIONAL_NVM_COMMANDS: u16 = 1 | 1 << 2 | 1 << 3 | 1 << 4 | 1 << 5 | 1 << 7 | 1 << 8;
/// FUSES bit 0: fused Compare and Write.
pub const FUSES_COMPARE_AND_WRITE: u16 = 1;
/// OCFS bit 0: Copy descriptor format 0h.
pub const OCFS_FORMAT_0: u16 = 1;

impl ControllerIdentity<'_> {
    pub fn encode(&self) -> Page {
        use controller::*;
        let mut page = Page::default();
        let io = self.controller_type == ControllerType::Io;
        page.u16(VID, 0)
            .ascii(SN, 20, self.serial)
            .ascii(MN, 40, self.model)
            .ascii(FR, 8, self.firmware)
            .u8(RAB, 6)
            .u16(CNTLID, self.controller_id)
            .u32(VER, self.version)
            .u32(OAES, self.async_event_notices)
            .u8(CNTRLTYPE, self.controller_type as u8)
            .u8(ACL, 3)
            .u8(AERL, self.async_event_limit.saturating_sub(1))
            .u8(ELPE, self.error_log_entries)
            .u16(KAS, self.keep_alive_granularity_100ms)
            .u16(MAXCMD, self.max_commands)
            .bytes(SUBNQN, self.subsystem_nqn.as_bytes());
        // SGLS bit 0: byte aligned SGLs; bit 2: keyed data block descriptors.
        let mut sgls: u32 = 1 | 1 << 2;
        if self.in_capsule_data {
            sgls |= 1 << 20;
        }
        page.u32(SGLS, sgls).u8(MSDBD, 1).u8(FCATT, 0).u16(ICDOFF, 0);
        if io {
            let ieee = self.ieee_oui.to_le_bytes();
            page.bytes(IEEE, &ieee[..3])
                // Several ports (bit 0) and controllers (bit 1); ANA reporting (bit 3).
                .u8(CMIC, 1 | 1 << 1 | 1 << 3)
                .u8(ANATT, super::ana::TRANSITION_TIME_SECONDS)
                .u8(ANACAP, super::ana::CAPABILITIES)
                .u32(ANAGRPMAX, super::ana::GROUPS_MAX)
                .u32(NANAGRPID, super::ana::GROUPS_MAX)
                .u8(MDTS, self.max_transfer_shift)
                .u32(CTRATT, CTRATT_HOST_ID_128 | CTRATT_TRAFFIC_BASED_KEEP_ALIVE)
                .u8(FRMW, 0x3) // one slot, read only
                .u8(LPA, 0x7) // per-namespace SMART, commands effects, extended data
                .u8(SQES, 0x66)
                .u8(CQES, 0x44)
                .u32(NN, self.namespace_count)
                .u32(MNAN, self.namespace_count)
                .u16(ONCS, OPTIONAL_NVM_COMMANDS)
                .u16(FUSES, FUSES_COMPARE_AND_WRITE)
                // One block; each namespace states its own unit (NACWU).
                .u16(ACWU, 0)
                .u16(OCFS, OCFS_FORMAT_0)
                .u8(VWC, if self.volatile_write_cache { 1 | VWC_FLUSH_NO_BROADCAST } else { 0 })
                .u32(IOCCSZ, self.command_capsule_units)
                .u32(IORCSZ, 1)
                // Power state 0: maximum power 25.00 W in 0.01 W units.
                .u16(PSD0, 2500);
        } else {
            // The discovery log answers with extended data; it is the only log.
            page.u8(LPA, 1 << 2);
        }
        page
    }
}

/// Values for Identify Namespace and the NVM-specific and independent structures.
#[derive(Clone, Debug)]
pub struct NamespaceIdentity {
    pub size_blocks: u64,
    pub block_size_shift: u8,
    pub nguid: [u8; 16],
    pub uuid: [u8; 16],
    pub volatile_write_cache: bool,
    /// Deallocated blocks read as zeroes (DLFEAT bits 2:0 = 001b).
    pub deallocated_reads_zeroes: bool,
    /// Blocks in one maximum transfer (MDTS): the largest fused Compare and Write
    /// that is atomic, and the largest Copy source range.
    pub transfer_blocks_max: u32,
    /// Source ranges one Copy may name.
    pub copy_ranges_max: u16,
    pub ready: bool,
    /// NSATTR bit 0: writes are refused (Namespace is Write Protected).
    pub write_protected: bool,
    /// RESCAP: the reservation types and options served.
    pub reservation_capabilities: u8,
    /// ANAGRPID: the namespace's ANA group.
    pub ana_group: u32,
}

/// Identify Namespace offsets (NVM Command Set Specification 1.0, Figure 97).
mod namespace {
    pub const NSZE: usize = 0;
    pub const NCAP: usize = 8;
    pub const NUSE: usize = 16;
    pub const NSFEAT: usize = 24;
    pub const NLBAF: usize = 25;
    pub const FLBAS: usize = 26;
    pub const NMIC: usize = 30;
    pub const RESCAP: usize = 31;
    pub const ANAGRPID: usize = 92;
    pub const DLFEAT: usize = 33;
    pub const NSATTR: usize = 99;
    pub const NACWU: usize = 38;
    pub const MSSRL: usize = 74;
    pub const MCL: usize = 76;
    pub const MSRC: usize = 80;
    pub const NGUID: usize = 104;
    pub const LBAF0: usize = 128;
}

/// NMIC bit 0: the namespace may be attached to more than one controller. Every
/// namespace is: all controllers of a subsystem see all its namespaces.
const NMIC_SHARED: u8 = 1;

/// Namespace Identification Descriptor types (NVMe Base Specification 2.0, Figure 279).
pub mod descriptor {
    pub const NGUID: u8 = 2;
    pub const UUID: u8 = 3;
    pub const CSI: u8 = 4;
}

impl NamespaceIdentity {
    /// CNS 00h: Identify Namespace for the NVM command set.
    pub fn encode(&self) -> Page {
        use namespace::*;
        let mut page = Page::default();
        let range_blocks = self.transfer_blocks_max.clamp(1, u32::from(u16::MAX));
        page.u64(NSZE, self.size_blocks)
            .u64(NCAP, self.size_blocks)
            .u64(NUSE, self.size_blocks)
            // NSFEAT bit 1 (NSABP): NAWUN, NAWUPF and NACWU apply (0: one block atomic
            // for writes; compare and write up to MDTS).
            .u8(NSFEAT, 1 << 1)
            .u16(NACWU, range_blocks.saturating_sub(1) as u16)
            .u16(MSSRL, range_blocks as u16)
            .u32(MCL, range_blocks.saturating_mul(u32::from(self.copy_ranges_max)))
            .u8(MSRC, self.copy_ranges_max.saturating_sub(1).min(255) as u8)
            .u8(NLBAF, 0)
            .u8(FLBAS, 0)
            .u8(NMIC, NMIC_SHARED)
            .u8(RESCAP, self.reservation_capabilities)
            .u32(ANAGRPID, self.ana_group)
            // Bit 3: Write Zeroes may deallocate (DEAC honoured).
            .u8(DLFEAT, 1 << 3 | u8::from(self.deallocated_reads_zeroes))
            .u8(NSATTR, u8::from(self.write_protected))
            .bytes(NGUID, &self.nguid)
            // LBA format 0: no metadata, LBADS in bits 23:16, relative performance best.
            .u32(LBAF0, u32::from(self.block_size_shift) << 16);
        page
    }

    /// CNS 03h: the namespace identification descriptor list.
    pub fn encode_descriptors(&self) -> Page {
        let mut page = Page::default();
        // Fixed layout: NGUID at 0, UUID at 20, CSI at 40 (4-byte header + identifier each).
        page.u8(0, descriptor::NGUID).u8(1, 16).bytes(4, &self.nguid);
        page.u8(20, descriptor::UUID).u8(21, 16).bytes(24, &self.uuid);
        page.u8(40, descriptor::CSI).u8(41, 1).u8(44, CSI_NVM);
        page
    }

    /// CNS 08h: I/O command set independent Identify Namespace (NVMe Base 2.0, Figure 280).
    pub fn encode_independent(&self) -> Page {
        const NMIC: usize = 1;
        const RESCAP: usize = 2;
        const ANAGRPID: usize = 4;
        const NSATTR: usize = 8;
        const NSTAT: usize = 14;
        let mut page = Page::default();
        page.u8(NMIC, NMIC_SHARED).u8(RESCAP, self.reservation_capabilities).u32(ANAGRPID, self.ana_group).u8(NSATTR, u8::from(self.write_protected)).u8(NSTAT, u8::from(self.ready));
        page
    }
}

/// CNS 06h for the NVM command set (NVM Command Set 1.0, Figure 98): VSL, the largest
/// Verify, as a power of two of 4 KiB pages (MDTS). Write Zeroes and Dataset
/// Management have no limit of their own (0).
pub fn encode_nvm_controller(verify_size_shift: u8) -> Page {
    const VSL: usize = 0;
    let mut page = Page::default();
    page.u8(VSL, verify_size_shift);
    page
}

/// CNS 02h / 07h: up to 1024 active NSIDs greater than `start`, ascending.
pub fn encode_namespace_list(namespace_ids: impl Iterator<Item = u32>, start: u32) -> Page {
    let mut page = Page::default();
    for (slot, id) in (0..IDENTIFY_BYTES).step_by(4).zip(namespace_ids.filter(|&id| id > start)) {
        page.u32(slot, id);
    }
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io_identity() -> ControllerIdentity<'static> {
        ControllerIdentity {
            controller_id: 7,
            controller_type: ControllerType::Io,
            serial: "SN1",
            model: "p2ptgt",
            firmware: "0.1",
            subsystem_nqn: "nqn.test",
            max_transfer_shift: 5,
            version: 0x0002_0000,
            keep_alive_granularity_100ms: 10,
            max_commands: 128,
            namespace_count: 1,
            volatile_write_cache: true,
            command_capsule_units: 260,
            in_capsule_data: true,
            async_event_limit: 4,
            error_log_entries: 127,
            async_event_notices: 0,
            ieee_oui: 0x00_12_34_56,
        }
    }

    fn le32(page: &Page, at: usize) -> u32 {
        u32::from_le_bytes(page.0[at..at + 4].try_into().unwrap())
    }

    #[test]
    fn controller_fields_the_linux_host_checks() {
        let page = io_identity().encode();
        assert_eq!(&page.0[4..24], b"SN1                 ");
        assert_eq!(page.0[77], 5, "MDTS");
        assert_eq!(u16::from_le_bytes([page.0[78], page.0[79]]), 7, "CNTLID");
        assert_eq!(u16::from_le_bytes([page.0[320], page.0[321]]), 10, "KAS");
        assert_eq!(le32(&page, 536), 1 | 1 << 2 | 1 << 20, "SGLS");
        assert_eq!(le32(&page, 1792), 260, "IOCCSZ");
        assert_eq!(le32(&page, 1796), 1, "IORCSZ");
        assert_eq!(u16::from_le_bytes([page.0[1800], page.0[1801]]), 0, "ICDOFF");
        assert_eq!(&page.0[768..776], b"nqn.test");
        assert_eq!(page.0[111], 1, "CNTRLTYPE");
        assert_eq!(page.0[76], 0b1011, "CMIC: multi-port, multi-controller, ANA reporting");
        assert_eq!(&page.0[342..352], &[10, 0x1F, 128, 0, 0, 0, 128, 0, 0, 0], "ANATT, ANACAP, ANAGRPMAX, NANAGRPID");
        assert_eq!(page.0[525], 1 | 2 << 1, "VWC present, no broadcast Flush");
        assert_eq!(le32(&page, 96), 1 | 1 << 6, "CTRATT: HIDS and TBKAS, not FDPS (bit 19)");
        assert_eq!(&page.0[73..76], &[0x56, 0x34, 0x12], "IEEE OUI");
        assert_eq!(le32(&page, 92), 0, "OAES: no notice is raised");
    }

    #[test]
    fn no_in_capsule_data_clears_sgls_bit_20() {
        let mut identity = io_identity();
        identity.in_capsule_data = false;
        identity.command_capsule_units = 4;
        let page = identity.encode();
        assert_eq!(le32(&page, 536) & 1 << 20, 0);
        assert_eq!(le32(&page, 1792), 4);
    }

    #[test]
    fn discovery_controller_type_and_no_io_fields() {
        let mut identity = io_identity();
        identity.controller_type = ControllerType::Discovery;
        let page = identity.encode();
        assert_eq!(page.0[111], 2);
        assert_eq!(le32(&page, 516), 0, "NN");
        assert_eq!(page.0[260], 0, "FRMW: no firmware log");
        assert_eq!(page.0[261], 1 << 2, "LPA: extended data only");
        assert_eq!(le32(&page, 96), 0, "CTRATT");
    }

    fn namespace() -> NamespaceIdentity {
        NamespaceIdentity { size_blocks: 0x20_0000, block_size_shift: 9, nguid: [0xAB; 16], uuid: [0xCD; 16], volatile_write_cache: true, deallocated_reads_zeroes: true, transfer_blocks_max: 256, copy_ranges_max: 128, ready: true, write_protected: false, reservation_capabilities: 0x7E, ana_group: 1 }
    }

    #[test]
    fn namespace_fields() {
        let page = namespace().encode();
        assert_eq!(u64::from_le_bytes(page.0[0..8].try_into().unwrap()), 0x20_0000);
        assert_eq!(u64::from_le_bytes(page.0[8..16].try_into().unwrap()), 0x20_0000);
        assert_eq!(le32(&page, 128), 9 << 16);
        assert_eq!(&page.0[104..120], &[0xAB; 16]);
        assert_eq!(page.0[30], 1, "NMIC: shared");
        assert_eq!(page.0[31], 0x7E, "RESCAP: the six reservation types");
        assert_eq!(page.0[99], 0, "NSATTR: writable");
        let protected = NamespaceIdentity { write_protected: true, ..namespace() };
        assert_eq!(protected.encode().0[99], 1, "NSATTR: write protected");
        assert_eq!(protected.encode_independent().0[8], 1, "CNS 08h NSATTR, which the Linux host reads");
        assert_eq!(namespace().encode_independent().0[8], 0);
        assert_eq!(u16::from_le_bytes([page.0[38], page.0[39]]), 255, "NACWU, 0's based");
        assert_eq!(u16::from_le_bytes([page.0[74], page.0[75]]), 256, "MSSRL");
        assert_eq!(le32(&page, 76), 256 * 128, "MCL");
        assert_eq!(page.0[80], 127, "MSRC, 0's based");
        assert_eq!(page.0[33], 0b1001, "DLFEAT: DEAC honoured, deallocated blocks read zeroes");
    }

    #[test]
    fn descriptor_list_layout() {
        let page = namespace().encode_descriptors();
        assert_eq!(&page.0[0..4], &[2, 16, 0, 0]);
        assert_eq!(&page.0[4..20], &[0xAB; 16]);
        assert_eq!(&page.0[20..24], &[3, 16, 0, 0]);
        assert_eq!(&page.0[24..40], &[0xCD; 16]);
        assert_eq!(&page.0[40..45], &[4, 1, 0, 0, 0]);
        assert_eq!(page.0[45], 0, "list terminated");
    }

    #[test]
    fn independent_namespace_ready_bit() {
        assert_eq!(namespace().encode_independent().0[14], 1);
        let not_ready = NamespaceIdentity { ready: false, ..namespace() };
        assert_eq!(not_ready.encode_independent().0[14], 0);
    }

    #[test]
    fn namespace_list_starts_after_start() {
        let page = encode_namespace_list([1, 2, 5].into_iter(), 1);
        assert_eq!(le32(&page, 0), 2);
        assert_eq!(le32(&page, 4), 5);
        assert_eq!(le32(&page, 8), 0);
        let page = encode_namespace_list(1..=2000, 0);
        assert_eq!(le32(&page, 4092), 1024, "at most 1024 entries");
    }
}
