//! Field names for the binary pages the conformance scenario reads: Identify data
//! structures and log pages, named by the byte offsets of the NVM Express Base
//! Specification 2.0 (Figures 275 (Identify Controller), 280 (Identify Namespace), 199
//! (log page identifiers)) and the NVM Command Set Specification 1.0. Pure decoding:
//! bytes in, `field -> value` out. Bytes no named field covers are still compared, as
//! ranges named `bytes[0xSTART..0xEND]` (see `Page::finish`).

use std::collections::BTreeMap;

/// Field name -> value, the unit the comparer works in.
pub type Fields = BTreeMap<String, String>;

/// How a field's bytes are shown.
#[derive(Clone, Copy)]
pub enum Kind {
    /// Little-endian unsigned integer (up to 16 bytes), shown in hex.
    Int,
    /// ASCII, trailing spaces and NULs trimmed.
    Text,
    /// Raw bytes in hex.
    Bytes,
}

/// A named byte range: (name, offset, length, kind).
pub type Field = (&'static str, usize, usize, Kind);

use Kind::{Bytes, Int, Text};

/// Identify Controller (CNS 01h), Base 2.0 Figure 275. The power state descriptors
/// (2048..3072) and the vendor area are named by `identify_controller`.
pub const IDENTIFY_CONTROLLER: &[Field] = &[
    ("vid", 0, 2, Int), ("ssvid", 2, 2, Int), ("sn", 4, 20, Text), ("mn", 24, 40, Text),
    ("fr", 64, 8, Text), ("rab", 72, 1, Int), ("ieee", 73, 3, Int), ("cmic", 76, 1, Int),
    ("mdts", 77, 1, Int), ("cntlid", 78, 2, Int), ("ver", 80, 4, Int), ("rtd3r", 84, 4, Int),
    ("rtd3e", 88, 4, Int), ("oaes", 92, 4, Int), ("ctratt", 96, 4, Int), ("rrls", 100, 2, Int),
    ("cntrltype", 111, 1, Int), ("fguid", 112, 16, Bytes), ("crdt1", 128, 2, Int),
    ("crdt2", 130, 2, Int), ("crdt3", 132, 2, Int), ("nvmsr", 253, 1, Int), ("vwci", 254, 1, Int),
    ("mec", 255, 1, Int), ("oacs", 256, 2, Int), ("acl", 258, 1, Int), ("aerl", 259, 1, Int),
    ("frmw", 260, 1, Int), ("lpa", 261, 1, Int), ("elpe", 262, 1, Int), ("npss", 263, 1, Int),
    ("avscc", 264, 1, Int), ("apsta", 265, 1, Int), ("wctemp", 266, 2, Int), ("cctemp", 268, 2, Int),
    ("mtfa", 270, 2, Int), ("hmpre", 272, 4, Int), ("hmmin", 276, 4, Int), ("tnvmcap", 280, 16, Int),
    ("unvmcap", 296, 16, Int), ("rpmbs", 312, 4, Int), ("edstt", 316, 2, Int), ("dsto", 318, 1, Int),
    ("fwug", 319, 1, Int), ("kas", 320, 2, Int), ("hctma", 322, 2, Int), ("mntmt", 324, 2, Int),
    ("mxtmt", 326, 2, Int), ("sanicap", 328, 4, Int), ("hmminds", 332, 4, Int), ("hmmaxd", 336, 2, Int),
    ("nsetidmax", 338, 2, Int), ("endgidmax", 340, 2, Int), ("anatt", 342, 1, Int), ("anacap", 343, 1, Int),
    ("anagrpmax", 344, 4, Int), ("nanagrpid", 348, 4, Int), ("pels", 352, 4, Int), ("domainid", 356, 2, Int),
    ("megcap", 368, 16, Int), ("sqes", 512, 1, Int), ("cqes", 513, 1, Int), ("maxcmd", 514, 2, Int),
    ("nn", 516, 4, Int), ("oncs", 520, 2, Int), ("fuses", 522, 2, Int), ("fna", 524, 1, Int),
    ("vwc", 525, 1, Int), ("awun", 526, 2, Int), ("awupf", 528, 2, Int), ("icsvscc", 530, 1, Int),
    ("nwpc", 531, 1, Int), ("acwu", 532, 2, Int), ("ocfs", 534, 2, Int), ("sgls", 536, 4, Int),
    ("mnan", 540, 4, Int), ("maxdna", 544, 16, Int), ("maxcna", 560, 4, Int), ("subnqn", 768, 256, Text),
    ("ioccsz", 1792, 4, Int), ("iorcsz", 1796, 4, Int), ("icdoff", 1800, 2, Int), ("fcatt", 1802, 1, Int),
    ("msdbd", 1803, 1, Int), ("ofcs", 1804, 2, Int),
];

/// Identify Namespace (CNS 00h), NVM Command Set 1.0 Figure 97; LBA formats by
/// `identify_namespace`.
pub const IDENTIFY_NAMESPACE: &[Field] = &[
    ("nsze", 0, 8, Int), ("ncap", 8, 8, Int), ("nuse", 16, 8, Int), ("nsfeat", 24, 1, Int),
    ("nlbaf", 25, 1, Int), ("flbas", 26, 1, Int), ("mc", 27, 1, Int), ("dpc", 28, 1, Int),
    ("dps", 29, 1, Int), ("nmic", 30, 1, Int), ("rescap", 31, 1, Int), ("fpi", 32, 1, Int),
    ("dlfeat", 33, 1, Int), ("nawun", 34, 2, Int), ("nawupf", 36, 2, Int), ("nacwu", 38, 2, Int),
    ("nabsn", 40, 2, Int), ("nabo", 42, 2, Int), ("nabspf", 44, 2, Int), ("noiob", 46, 2, Int),
    ("nvmcap", 48, 16, Int), ("npwg", 64, 2, Int), ("npwa", 66, 2, Int), ("npdg", 68, 2, Int),
    ("npda", 70, 2, Int), ("nows", 72, 2, Int), ("mssrl", 74, 2, Int), ("mcl", 76, 4, Int),
    ("msrc", 80, 1, Int), ("nulbaf", 82, 1, Int), ("anagrpid", 92, 4, Int), ("nsattr", 99, 1, Int),
    ("nvmsetid", 100, 2, Int), ("endgid", 102, 2, Int), ("nguid", 104, 16, Bytes), ("eui64", 120, 8, Bytes),
];

/// I/O Command Set specific Identify Namespace for the NVM command set (CNS 05h, CSI 0),
/// NVM Command Set 1.0 Figure 114; extended LBA formats by `nvm_namespace`.
/// Bytes 268..288 are from NVM Command Set 1.1 (Figure 114): NPDGL, NPRG, NPRA, NORS, NPDAL.
pub const NVM_NAMESPACE: &[Field] = &[
    ("lbstm", 0, 8, Int), ("pic", 8, 1, Int), ("npdgl", 268, 4, Int), ("nprg", 272, 4, Int),
    ("npra", 276, 4, Int), ("nors", 280, 4, Int), ("npdal", 284, 4, Int),
];

/// I/O Command Set specific Identify Controller for the NVM command set (CNS 06h, CSI 0),
/// NVM Command Set 1.0 Figure 116.
pub const NVM_CONTROLLER: &[Field] =
    &[("vsl", 0, 1, Int), ("wzsl", 1, 1, Int), ("wusl", 2, 1, Int), ("dmrl", 3, 1, Int), ("dmrsl", 4, 4, Int), ("dmsl", 8, 8, Int)];

/// I/O Command Set Independent Identify Namespace (CNS 08h), Base 2.0 Figure 280.
pub const INDEPENDENT_NAMESPACE: &[Field] = &[
    ("nsfeat", 0, 1, Int), ("nmic", 1, 1, Int), ("rescap", 2, 1, Int), ("fpi", 3, 1, Int),
    ("anagrpid", 4, 4, Int), ("nsattr", 8, 1, Int), ("nvmsetid", 9, 2, Int), ("endgid", 11, 2, Int),
    ("nstat", 13, 1, Int),
];

/// SMART / Health Information (log 02h), Base 2.0 Figure 207.
pub const SMART: &[Field] = &[
    ("critical_warning", 0, 1, Int), ("composite_temperature", 1, 2, Int), ("available_spare", 3, 1, Int),
    ("available_spare_threshold", 4, 1, Int), ("percentage_used", 5, 1, Int),
    ("endurance_group_critical_warning", 6, 1, Int), ("data_units_read", 32, 16, Int),
    ("data_units_written", 48, 16, Int), ("host_read_commands", 64, 16, Int),
    ("host_write_commands", 80, 16, Int), ("controller_busy_time", 96, 16, Int), ("power_cycles", 112, 16, Int),
    ("power_on_hours", 128, 16, Int), ("unsafe_shutdowns", 144, 16, Int), ("media_errors", 160, 16, Int),
    ("error_log_entries", 176, 16, Int), ("warning_temperature_time", 192, 4, Int),
    ("critical_temperature_time", 196, 4, Int), ("temperature_sensors", 200, 16, Bytes),
];

/// Error Information entry (log 01h, 64 bytes each), Base 2.0 Figure 205. `cid` is the
/// host's command identifier of the failed command: it differs per run, so the
/// comparer leaves it out by name.
pub const ERROR_ENTRY: &[Field] = &[
    ("error_count", 0, 8, Int), ("sqid", 8, 2, Int), ("cid", 10, 2, Int), ("status", 12, 2, Int),
    ("parameter_error_location", 14, 2, Int), ("lba", 16, 8, Int), ("nsid", 24, 4, Int),
    ("vendor_specific", 28, 1, Int), ("trtype", 29, 1, Int), ("command_specific", 32, 8, Int),
    ("trtype_specific", 40, 2, Int),
];

/// Firmware Slot Information (log 03h), Base 2.0 Figure 209.
pub const FIRMWARE_SLOTS: &[Field] = &[
    ("afi", 0, 1, Int), ("frs1", 8, 8, Text), ("frs2", 16, 8, Text), ("frs3", 24, 8, Text),
    ("frs4", 32, 8, Text), ("frs5", 40, 8, Text), ("frs6", 48, 8, Text), ("frs7", 56, 8, Text),
];

/// Reservation Notification (log 80h), Base 2.0 Figure 265.
pub const RESERVATION_NOTIFICATION: &[Field] =
    &[("log_page_count", 0, 8, Int), ("type", 8, 1, Int), ("available_pages", 9, 1, Int), ("nsid", 12, 4, Int)];

/// Discovery log page header (log 70h), Base 2.0 Figure 262.
pub const DISCOVERY_HEADER: &[Field] = &[("genctr", 0, 8, Int), ("numrec", 8, 8, Int), ("recfmt", 16, 2, Int)];

/// Discovery log page entry (1024 bytes), Base 2.0 Figure 263.
pub const DISCOVERY_ENTRY: &[Field] = &[
    ("trtype", 0, 1, Int), ("adrfam", 1, 1, Int), ("subtype", 2, 1, Int), ("treq", 3, 1, Int),
    ("portid", 4, 2, Int), ("cntlid", 6, 2, Int), ("asqsz", 8, 2, Int), ("eflags", 10, 2, Int),
    ("trsvcid", 32, 32, Text), ("subnqn", 256, 256, Text), ("traddr", 512, 256, Text),
    ("tsas", 768, 256, Bytes),
];

/// Decodes one page into fields, remembering which bytes were named.
pub struct Page<'a> {
    data: &'a [u8],
    named: Vec<bool>,
    pub fields: Fields,
}

impl<'a> Page<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Page { data, named: vec![false; data.len()], fields: Fields::new() }
    }

    /// Adds one field at `base + offset` under `prefix + name`; a field the data does
    /// not reach is left out.
    pub fn field(&mut self, prefix: &str, base: usize, (name, offset, length, kind): Field) {
        self.put(format!("{prefix}{name}"), base + offset, length, kind);
    }

    /// Adds the field `name` over `length` bytes at `start`, if the data reaches them.
    pub fn put(&mut self, name: String, start: usize, length: usize, kind: Kind) {
        let Some(bytes) = self.data.get(start..start + length) else { return };
        self.named[start..start + length].fill(true);
        self.fields.insert(name, show(bytes, kind));
    }

    pub fn fields_at(&mut self, prefix: &str, base: usize, layout: &[Field]) {
        for field in layout {
            self.field(prefix, base, *field);
        }
    }

    /// A run of `count` integers of `width` bytes from `base`, named `name[0xI]`.
    pub fn array(&mut self, name: &str, base: usize, width: usize, count: usize) {
        for index in 0..count {
            self.put(format!("{name}[{index:#04x}]"), base + index * width, width, Int);
        }
    }

    pub fn u32_at(&self, offset: usize) -> Option<u32> {
        Some(u32::from_le_bytes(self.data.get(offset..offset + 4)?.try_into().ok()?))
    }

    pub fn u64_at(&self, offset: usize) -> Option<u64> {
        Some(u64::from_le_bytes(self.data.get(offset..offset + 8)?.try_into().ok()?))
    }

    pub fn byte_at(&self, offset: usize) -> Option<u8> {
        self.data.get(offset).copied()
    }

    /// The fields, plus every run of unnamed bytes as `bytes[0xSTART..0xEND]` (hex,
    /// end exclusive) split where a run of zeros starts or ends, so that a differing
    /// reserved byte shows as a short range of its own.
    pub fn finish(mut self) -> Fields {
        let mut start = None;
        for index in 0..=self.data.len() {
            let unnamed = index < self.data.len() && !self.named[index];
            let zero = unnamed && self.data[index] == 0;
            if let Some((begin, begin_zero)) = start {
                if !unnamed || zero != begin_zero {
                    self.fields.insert(format!("bytes[{begin:#06x}..{index:#06x}]"), show(&self.data[begin..index], Bytes));
                    start = None;
                }
            }
            if unnamed && start.is_none() {
                start = Some((index, zero));
            }
        }
        self.fields
    }
}

/// Shows `bytes` as `kind`.
pub fn show(bytes: &[u8], kind: Kind) -> String {
    match kind {
        Int => {
            let value = bytes.iter().rev().fold(0u128, |value, byte| value << 8 | u128::from(*byte));
            format!("{value:#x}")
        }
        Text => String::from_utf8_lossy(bytes).trim_end_matches(['\0', ' ']).to_string(),
        Bytes if bytes.iter().all(|byte| *byte == 0) => format!("{} zero bytes", bytes.len()),
        Bytes => bytes.iter().map(|byte| format!("{byte:02x}")).collect(),
    }
}

/// Identify Controller: the named fields, 32 power state descriptors, the vendor area.
pub fn identify_controller(data: &[u8]) -> Fields {
    let mut page = Page::new(data);
    page.fields_at("", 0, IDENTIFY_CONTROLLER);
    for state in 0..32 {
        page.put(format!("psd{state}"), 2048 + 32 * state, 32, Bytes);
    }
    page.field("", 0, ("vendor_specific", 3072, 1024, Bytes));
    page.finish()
}

/// Identify Namespace: the named fields and 64 LBA formats.
pub fn identify_namespace(data: &[u8]) -> Fields {
    let mut page = Page::new(data);
    page.fields_at("", 0, IDENTIFY_NAMESPACE);
    page.array("lbaf", 128, 4, 64);
    page.field("", 0, ("vendor_specific", 384, 3712, Bytes));
    page.finish()
}

/// NVM command set Identify Namespace: the named fields and 64 extended LBA formats.
pub fn nvm_namespace(data: &[u8]) -> Fields {
    let mut page = Page::new(data);
    page.fields_at("", 0, NVM_NAMESPACE);
    page.array("elbaf", 12, 4, 64);
    page.finish()
}

/// A list of 32-bit identifiers ending at the first zero (Identify CNS 02h/07h, log 04h):
/// one field `ids` with the list, and the rest of the page as bytes.
pub fn id_list(data: &[u8]) -> Fields {
    let mut page = Page::new(data);
    let mut ids = Vec::new();
    let mut offset = 0;
    while let Some(id) = page.u32_at(offset).filter(|id| *id != 0) {
        ids.push(format!("{id:#x}"));
        offset += 4;
    }
    page.named[..offset].fill(true);
    page.fields.insert("ids".into(), if ids.is_empty() { "none".into() } else { ids.join(",") });
    page.finish()
}

/// Namespace Identification Descriptor list (CNS 03h), Base 2.0 Figure 278: the types in
/// order, and each descriptor's length and value under the value's name.
pub fn descriptors(data: &[u8]) -> Fields {
    let mut page = Page::new(data);
    let mut types = Vec::new();
    let mut offset = 0;
    while let (Some(kind), Some(length)) = (page.byte_at(offset), page.byte_at(offset + 1)) {
        if kind == 0 {
            break;
        }
        let name = match kind {
            1 => "eui64",
            2 => "nguid",
            3 => "uuid",
            4 => "csi",
            _ => "nid",
        };
        types.push(kind.to_string());
        let prefix = format!("descriptor[{kind}].");
        page.field(&prefix, offset, ("nidl", 1, 1, Int));
        page.field(&prefix, offset, ("reserved", 2, 2, Int));
        let kind = if name == "csi" { Int } else { Bytes };
        page.field(&prefix, offset, (name, 4, usize::from(length), kind));
        page.named[offset] = true;
        offset += 4 + usize::from(length);
    }
    page.fields.insert("types".into(), types.join(","));
    page.finish()
}

/// Supported Log Pages (log 00h), Base 2.0 Figure 204: one 32-bit entry per LID.
pub fn supported_logs(data: &[u8]) -> Fields {
    let mut page = Page::new(data);
    page.array("lid", 0, 4, 256);
    page.finish()
}

/// Error Information (log 01h): every entry the data holds, empty ones too.
pub fn error_log(data: &[u8]) -> Fields {
    let mut page = Page::new(data);
    for entry in 0..data.len() / 64 {
        page.fields_at(&format!("entry[{entry}]."), entry * 64, ERROR_ENTRY);
    }
    page.finish()
}

/// Commands Supported and Effects (log 05h), Base 2.0 Figure 210.
pub fn command_effects(data: &[u8]) -> Fields {
    let mut page = Page::new(data);
    page.array("acs", 0, 4, 256);
    page.array("iocs", 1024, 4, 256);
    page.finish()
}

/// Feature Identifiers Supported and Effects (log 12h), Base 2.0 Figure 221.
pub fn feature_effects(data: &[u8]) -> Fields {
    let mut page = Page::new(data);
    page.array("fid", 0, 4, 256);
    page.finish()
}

/// Asymmetric Namespace Access (log 0Ch), Base 2.0 Figures 222-223.
pub fn ana_log(data: &[u8]) -> Fields {
    let mut page = Page::new(data);
    page.fields_at("", 0, &[("chgcnt", 0, 8, Int), ("ngrps", 8, 2, Int)]);
    let groups = page.byte_at(8).map_or(0, usize::from);
    let mut offset = 16;
    for group in 0..groups {
        let Some(nsids) = page.u32_at(offset + 4) else { break };
        let prefix = format!("group[{group}].");
        page.fields_at(&prefix, offset, &[("grpid", 0, 4, Int), ("nnsids", 4, 4, Int), ("chgcnt", 8, 8, Int), ("state", 16, 1, Int)]);
        page.put(format!("{prefix}nsids"), offset + 32, 4 * nsids as usize, Bytes);
        offset += 32 + 4 * nsids as usize;
    }
    page.finish()
}

/// Discovery log (log 70h): header and the entries the data holds.
pub fn discovery_log(data: &[u8]) -> Fields {
    let mut page = Page::new(data);
    page.fields_at("", 0, DISCOVERY_HEADER);
    let records = page.u64_at(8).unwrap_or(0);
    for record in 0..records.min(64) as usize {
        page.fields_at(&format!("record[{record}]."), 1024 * (record + 1), DISCOVERY_ENTRY);
    }
    page.finish()
}

/// Fields of a page with one fixed layout.
pub fn fixed(data: &[u8], layout: &[Field]) -> Fields {
    let mut page = Page::new(data);
    page.fields_at("", 0, layout);
    page.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unnamed_bytes_become_ranges_split_at_zero_runs() {
        let fields = fixed(&[1, 0, 0, 2, 3, 0], &[("a", 0, 1, Int)]);
        assert_eq!(fields["a"], "0x1");
        assert_eq!(fields["bytes[0x0001..0x0003]"], "2 zero bytes");
        assert_eq!(fields["bytes[0x0003..0x0005]"], "0203");
        assert_eq!(fields["bytes[0x0005..0x0006]"], "1 zero bytes");
    }

    #[test]
    fn integers_are_little_endian_and_text_is_trimmed() {
        assert_eq!(show(&[0x34, 0x12], Int), "0x1234");
        assert_eq!(show(b"Linux   \0\0", Text), "Linux");
    }

    #[test]
    fn descriptors_are_named_by_type() {
        let mut data = vec![0u8; 64];
        data[..4].copy_from_slice(&[4, 1, 0, 0]);
        let fields = descriptors(&data);
        assert_eq!(fields["types"], "4");
        assert_eq!(fields["descriptor[4].csi"], "0x0");
    }

    #[test]
    fn id_lists_stop_at_zero() {
        let mut data = vec![0u8; 16];
        data[0] = 1;
        assert_eq!(id_list(&data)["ids"], "0x1");
    }
}
