//! NVMe/RDMA private data carried in RDMA CM connect request, accept and reject messages
//! (NVMe/RDMA Transport Specification 1.0, section 3.4). Pure parsing; no I/O.

use zerocopy::little_endian::U16;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::status::RejectStatus;

/// RDMA_CM_REQUEST private data, host to controller. It arrives padded to the CM's
/// private data size; only these 32 bytes are ours.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RawConnectRequest {
    pub record_format: U16,
    pub queue_id: U16,
    /// HRQSIZE: host receive queue size, 1's based.
    pub host_receive_queue_size: U16,
    /// HSQSIZE: host send queue size, 0's based (the SQSIZE of Connect).
    pub host_send_queue_size: U16,
    pub controller_id: U16,
    pub reserved: [u8; 22],
}
const _: () = assert!(size_of::<RawConnectRequest>() == 32);

/// RDMA_CM_REPLY private data, controller to host.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RawAccept {
    pub record_format: U16,
    /// CRQSIZE: controller receive queue size.
    pub controller_receive_queue_size: U16,
    pub reserved: [u8; 28],
}
const _: () = assert!(size_of::<RawAccept>() == 32);

/// RDMA_CM_REJECT private data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RawReject {
    pub record_format: U16,
    pub status: U16,
}
const _: () = assert!(size_of::<RawReject>() == 4);

/// A validated connect request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectRequest {
    pub queue_id: u16,
    /// Host receive queue size: how many responses the host can take at once.
    pub host_receive_queue_entries: u32,
    /// HSQSIZE converted to 1's based: commands the host may have outstanding.
    pub host_send_queue_entries: u32,
    pub controller_id: u16,
}

/// Limits the listener applies before any queue exists.
#[derive(Clone, Copy, Debug)]
pub struct ConnectLimits {
    pub admin_queue_entries_max: u32,
    pub io_queue_entries_max: u32,
    pub queue_id_max: u16,
}

impl ConnectRequest {
    /// Validates the private data of a connect request. Errors are reject codes to send
    /// back to the host before any queue exists.
    pub fn parse(private_data: &[u8], limits: &ConnectLimits) -> Result<ConnectRequest, RejectStatus> {
        let (raw, _) = RawConnectRequest::read_from_prefix(private_data).map_err(|_| RejectStatus::InvalidLength)?;
        if raw.record_format.get() != 0 {
            return Err(RejectStatus::InvalidRecordFormat);
        }
        let queue_id = raw.queue_id.get();
        if queue_id > limits.queue_id_max {
            return Err(RejectStatus::InvalidQueueId);
        }
        let entries_max =
            if queue_id == 0 { limits.admin_queue_entries_max } else { limits.io_queue_entries_max };
        let host_send_queue_entries = u32::from(raw.host_send_queue_size.get()) + 1;
        // An SQSIZE of 0 (one entry) cannot carry a command plus its completion flow.
        if host_send_queue_entries < 2 || host_send_queue_entries > entries_max {
            return Err(RejectStatus::InvalidHostSendQueueSize);
        }
        let host_receive_queue_entries = u32::from(raw.host_receive_queue_size.get());
        if host_receive_queue_entries == 0 || host_receive_queue_entries > entries_max.saturating_mul(2) {
            return Err(RejectStatus::InvalidHostReceiveQueueSize);
        }
        Ok(ConnectRequest {
            queue_id,
            host_receive_queue_entries,
            host_send_queue_entries,
            controller_id: raw.controller_id.get(),
        })
    }
}

impl RawAccept {
    pub fn new(controller_receive_queue_entries: u16) -> RawAccept {
        RawAccept { controller_receive_queue_size: U16::new(controller_receive_queue_entries), ..Default::default() }
    }
}

impl RawReject {
    pub fn new(status: RejectStatus) -> RawReject {
        RawReject { record_format: U16::new(0), status: U16::new(status as u16) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ConnectLimits = ConnectLimits { admin_queue_entries_max: 32, io_queue_entries_max: 128, queue_id_max: 4 };

    /// Admin queue request as the Linux host sends it, padded to 56 bytes by the CM.
    fn linux_admin_request() -> [u8; 56] {
        let mut bytes = [0u8; 56];
        bytes[4..6].copy_from_slice(&32u16.to_le_bytes());
        bytes[6..8].copy_from_slice(&31u16.to_le_bytes());
        bytes
    }

    #[test]
    fn linux_admin_request_parses() {
        let request = ConnectRequest::parse(&linux_admin_request(), &LIMITS).unwrap();
        assert_eq!(request, ConnectRequest {
            queue_id: 0,
            host_receive_queue_entries: 32,
            host_send_queue_entries: 32,
            controller_id: 0
        });
    }

    #[test]
    fn io_request_with_cntlid() {
        let mut bytes = linux_admin_request();
        bytes[2..4].copy_from_slice(&2u16.to_le_bytes());
        bytes[4..6].copy_from_slice(&128u16.to_le_bytes());
        bytes[6..8].copy_from_slice(&127u16.to_le_bytes());
        bytes[8..10].copy_from_slice(&5u16.to_le_bytes());
        let request = ConnectRequest::parse(&bytes, &LIMITS).unwrap();
        assert_eq!((request.queue_id, request.host_send_queue_entries, request.controller_id), (2, 128, 5));
    }

    #[test]
    fn each_field_has_its_reject() {
        let base = linux_admin_request();
        assert_eq!(ConnectRequest::parse(&base[..31], &LIMITS), Err(RejectStatus::InvalidLength));
        let mut bad = base;
        bad[0] = 1;
        assert_eq!(ConnectRequest::parse(&bad, &LIMITS), Err(RejectStatus::InvalidRecordFormat));
        let mut bad = base;
        bad[2] = 5;
        assert_eq!(ConnectRequest::parse(&bad, &LIMITS), Err(RejectStatus::InvalidQueueId));
        let mut bad = base;
        bad[6..8].copy_from_slice(&32u16.to_le_bytes());
        assert_eq!(ConnectRequest::parse(&bad, &LIMITS), Err(RejectStatus::InvalidHostSendQueueSize), "admin > 32");
        let mut bad = base;
        bad[6..8].copy_from_slice(&0u16.to_le_bytes());
        assert_eq!(ConnectRequest::parse(&bad, &LIMITS), Err(RejectStatus::InvalidHostSendQueueSize), "hsqsize 0");
        let mut bad = base;
        bad[6..8].copy_from_slice(&u16::MAX.to_le_bytes());
        assert_eq!(ConnectRequest::parse(&bad, &LIMITS), Err(RejectStatus::InvalidHostSendQueueSize), "no overflow");
        let mut bad = base;
        bad[4..6].copy_from_slice(&0u16.to_le_bytes());
        assert_eq!(ConnectRequest::parse(&bad, &LIMITS), Err(RejectStatus::InvalidHostReceiveQueueSize));
    }

    #[test]
    fn accept_and_reject_golden_bytes() {
        assert_eq!(&RawAccept::new(128).as_bytes()[..4], &[0, 0, 128, 0]);
        assert_eq!(RawReject::new(RejectStatus::InvalidHostSendQueueSize).as_bytes(), &[0, 0, 4, 0]);
    }
}
