//! SGL descriptors as the NVMe/RDMA host sends them in a command's Data Pointer
//! (NVMe Base Specification 2.0, section 4.1.8; NVMe/RDMA Transport Specification 1.0,
//! section 3.3). Pure parsing; no I/O.

use zerocopy::little_endian::U64;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::Status;

/// The 16-byte SGL descriptor as it sits in bytes 24..40 of a command.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RawSglDescriptor {
    pub address: U64,
    /// Bytes 8..15: a 24-bit length followed by a 32-bit key for keyed descriptors, or a
    /// 32-bit length followed by three reserved bytes for data block descriptors.
    pub length_and_key: [u8; 7],
    /// SGL Identifier: descriptor type in bits 7:4, subtype in bits 3:0.
    pub identifier: u8,
}
const _: () = assert!(size_of::<RawSglDescriptor>() == 16);

/// Descriptor type 0h, subtype 1h: data in the command capsule at an offset.
pub const DATA_BLOCK_OFFSET: u8 = 0x01;
/// Descriptor type 4h, subtype 0h: keyed remote memory, no invalidation requested.
pub const KEYED_ADDRESS: u8 = 0x40;
/// Descriptor type 4h, subtype Fh: keyed remote memory; the host asks the controller to
/// invalidate the key with its response.
pub const KEYED_INVALIDATE: u8 = 0x4F;

/// Remote host memory named by a keyed SGL data block descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyedSgl {
    pub address: u64,
    pub length_bytes: u32,
    pub key: u32,
    /// Set for subtype Fh: the response should be sent with invalidate of `key`.
    pub invalidate: bool,
}

/// A validated data pointer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataPointer {
    /// Keyed descriptor with length zero: the command moves no data.
    None,
    Keyed(KeyedSgl),
    /// Data that came in the capsule, `offset_bytes` from its start (after the 64-byte
    /// command) and `length_bytes` long.
    InCapsule { offset_bytes: u32, length_bytes: u32 },
}

impl DataPointer {
    pub fn length_bytes(&self) -> u32 {
        match *self {
            DataPointer::None => 0,
            DataPointer::Keyed(keyed) => keyed.length_bytes,
            DataPointer::InCapsule { length_bytes, .. } => length_bytes,
        }
    }
}

impl RawSglDescriptor {
    /// Decode the descriptor. Anything but the three forms a NVMe/RDMA host uses is an
    /// SGL status; in-capsule data is only accepted when the queue allows it.
    pub fn parse(&self, in_capsule_limit_bytes: u32) -> Result<DataPointer, Status> {
        match self.identifier {
            KEYED_ADDRESS | KEYED_INVALIDATE => {
                let [l0, l1, l2, k0, k1, k2, k3] = self.length_and_key;
                let length_bytes = u32::from_le_bytes([l0, l1, l2, 0]);
                let key = u32::from_le_bytes([k0, k1, k2, k3]);
                if length_bytes == 0 {
                    return Ok(DataPointer::None);
                }
                Ok(DataPointer::Keyed(KeyedSgl {
                    address: self.address.get(),
                    length_bytes,
                    key,
                    invalidate: self.identifier == KEYED_INVALIDATE,
                }))
            }
            DATA_BLOCK_OFFSET => {
                let [l0, l1, l2, l3, ..] = self.length_and_key;
                let length_bytes = u32::from_le_bytes([l0, l1, l2, l3]);
                let offset = self.address.get();
                if offset > u64::from(in_capsule_limit_bytes) {
                    return Err(Status::SGL_INVALID_OFFSET.dnr());
                }
                // offset <= limit, which is a u32.
                let offset_bytes = offset as u32;
                if length_bytes > in_capsule_limit_bytes.saturating_sub(offset_bytes) {
                    return Err(Status::SGL_INVALID_DATA.dnr());
                }
                Ok(DataPointer::InCapsule { offset_bytes, length_bytes })
            }
            _ => Err(Status::SGL_INVALID_TYPE.dnr()),
        }
    }

    /// Build a keyed descriptor (used by tests and the loopback host).
    pub fn keyed(keyed: KeyedSgl) -> RawSglDescriptor {
        let l = keyed.length_bytes.to_le_bytes();
        let k = keyed.key.to_le_bytes();
        RawSglDescriptor {
            address: U64::new(keyed.address),
            length_and_key: [l[0], l[1], l[2], k[0], k[1], k[2], k[3]],
            identifier: if keyed.invalidate { KEYED_INVALIDATE } else { KEYED_ADDRESS },
        }
    }

    /// Build an in-capsule data block descriptor at offset 0.
    pub fn in_capsule(length_bytes: u32) -> RawSglDescriptor {
        let [l0, l1, l2, l3] = length_bytes.to_le_bytes();
        RawSglDescriptor {
            address: U64::new(0),
            length_and_key: [l0, l1, l2, l3, 0, 0, 0],
            identifier: DATA_BLOCK_OFFSET,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A descriptor as the Linux host builds it for a 4 KiB read: address
    /// 0x0000_7f00_1234_5000, length 0x001000, key 0xdeadbeef, type 4Fh.
    const GOLDEN_KEYED: [u8; 16] = [
        0x00, 0x50, 0x34, 0x12, 0x00, 0x7f, 0x00, 0x00, 0x00, 0x10, 0x00, 0xef, 0xbe, 0xad, 0xde, 0x4f,
    ];

    #[test]
    fn keyed_golden_bytes_parse() {
        let raw = RawSglDescriptor::read_from_bytes(&GOLDEN_KEYED).unwrap();
        let expected = KeyedSgl { address: 0x7f00_1234_5000, length_bytes: 4096, key: 0xdead_beef, invalidate: true };
        assert_eq!(raw.parse(0), Ok(DataPointer::Keyed(expected)));
        assert_eq!(RawSglDescriptor::keyed(expected).as_bytes(), &GOLDEN_KEYED);
    }

    #[test]
    fn keyed_zero_length_is_no_data() {
        let raw = RawSglDescriptor::keyed(KeyedSgl { address: 0, length_bytes: 0, key: 0, invalidate: false });
        assert_eq!(raw.parse(4096), Ok(DataPointer::None));
    }

    #[test]
    fn keyed_length_is_24_bits() {
        let mut bytes = GOLDEN_KEYED;
        bytes[8..11].copy_from_slice(&[0xff, 0xff, 0xff]);
        let raw = RawSglDescriptor::read_from_bytes(&bytes).unwrap();
        assert_eq!(raw.parse(0).unwrap().length_bytes(), 0xff_ffff);
    }

    #[test]
    fn in_capsule_round_trip_and_limits() {
        let raw = RawSglDescriptor::in_capsule(1024);
        assert_eq!(raw.parse(4096), Ok(DataPointer::InCapsule { offset_bytes: 0, length_bytes: 1024 }));
        assert_eq!(raw.parse(512), Err(Status::SGL_INVALID_DATA.dnr()));
        let mut offset = raw;
        offset.address = U64::new(8192);
        assert_eq!(offset.parse(4096), Err(Status::SGL_INVALID_OFFSET.dnr()));
        offset.address = U64::new(u64::MAX);
        assert_eq!(offset.parse(4096), Err(Status::SGL_INVALID_OFFSET.dnr()));
    }

    #[test]
    fn in_capsule_refused_when_queue_has_none() {
        assert_eq!(RawSglDescriptor::in_capsule(16).parse(0), Err(Status::SGL_INVALID_DATA.dnr()));
    }

    #[test]
    fn other_types_are_refused() {
        for identifier in [0x00, 0x02, 0x30, 0x41, 0x5f, 0xff] {
            let raw = RawSglDescriptor { identifier, ..Default::default() };
            assert_eq!(raw.parse(4096), Err(Status::SGL_INVALID_TYPE.dnr()), "identifier {identifier:#x}");
        }
    }
}
