//! The in-band authentication messages that Authentication Send and Receive carry:
//! AUTH_Negotiate, the DH-HMAC-CHAP messages and AUTH_Failure (NVMe Base 2.0, sections
//! 8.13.5 and 6.3.2.1), and the command fields that name the protocol. Pure byte
//! layouts: no crypto, no I/O. A parser takes the bytes of one transfer (the TL bytes of
//! a Send, or a test host's Receive buffer) and ignores any after the message.

use std::fmt;

use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::command::{fabrics_type, RawCommand};

/// SECP: the security protocol of NVMe in-band authentication.
pub const SECURITY_PROTOCOL: u8 = 0xE9;
/// SPSP0 and SPSP1: the protocol-specific fields, DH-HMAC-CHAP's only values.
pub const SPSP0: u8 = 0x01;
pub const SPSP1: u8 = 0x01;
pub const FCTYPE_AUTH_SEND: u8 = fabrics_type::AUTHENTICATION_SEND;
pub const FCTYPE_AUTH_RECEIVE: u8 = fabrics_type::AUTHENTICATION_RECEIVE;

/// AUTH_Type, byte 0 of every message: the common messages (Negotiate, Failure).
pub const AUTH_TYPE_COMMON: u8 = 0x00;
/// AUTH_Type: the DH-HMAC-CHAP messages.
pub const AUTH_TYPE_DHCHAP: u8 = 0x01;

/// AUTH_Id, byte 1 of every message. NEGOTIATE, FAILURE1 and FAILURE2 go with
/// [`AUTH_TYPE_COMMON`], the others with [`AUTH_TYPE_DHCHAP`].
pub const NEGOTIATE: u8 = 0x00;
pub const CHALLENGE: u8 = 0x01;
pub const REPLY: u8 = 0x02;
pub const SUCCESS1: u8 = 0x03;
pub const SUCCESS2: u8 = 0x04;
pub const FAILURE2: u8 = 0xF0;
pub const FAILURE1: u8 = 0xF1;

/// AUTHREQ.ATR, bit 17 of a Connect response's Dword 0: an authentication transaction
/// is required before the admin queue may be used.
pub const AUTHREQ_ATR: u32 = 1 << 17;

/// AUTH-ID of the protocol descriptor: DH-HMAC-CHAP.
pub const PROTOCOL_DHCHAP: u8 = 0x01;
/// RESCODE of every AUTH_Failure: "authentication failure".
pub const RESCODE_FAILURE: u8 = 0x01;
/// The capacity of each identifier list (HashIDList, DHgIDList) in a descriptor.
pub const ID_LIST_MAX: usize = 30;

/// Offsets of the command fields that name the protocol, for the error location of an
/// Invalid Field status (Authentication Send and Receive commands, NVMe Base 2.0,
/// Figures 396 and 398).
pub mod command_offset {
    pub const SPSP0: u16 = 41;
    pub const SPSP1: u16 = 42;
    pub const SECURITY_PROTOCOL: u16 = 43;
    /// TL of a Send, AL of a Receive.
    pub const LENGTH: u16 = 44;
}

/// The fields of an Authentication Send or Receive command besides the data pointer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuthCommand {
    pub security_protocol: u8,
    pub spsp0: u8,
    pub spsp1: u8,
    /// TL (Send: the bytes the host sends) or AL (Receive: the bytes it can take).
    pub length_bytes: u32,
}

impl AuthCommand {
    /// Decodes CDW10 (SECP in bits 31:24, SPSP1 in 23:16, SPSP0 in 15:8) and CDW11.
    pub fn parse(command: &RawCommand) -> AuthCommand {
        let [_, spsp0, spsp1, security_protocol] = command.cdw10.get().to_le_bytes();
        AuthCommand { security_protocol, spsp0, spsp1, length_bytes: command.cdw11.get() }
    }

    /// Checks SECP, SPSP0 and SPSP1 in nvmet's order. The error is the offset of the
    /// first wrong field, to answer Invalid Field in Command with DNR.
    pub fn check_protocol(&self) -> Result<(), u16> {
        if self.security_protocol != SECURITY_PROTOCOL {
            return Err(command_offset::SECURITY_PROTOCOL);
        }
        if self.spsp0 != SPSP0 {
            return Err(command_offset::SPSP0);
        }
        if self.spsp1 != SPSP1 {
            return Err(command_offset::SPSP1);
        }
        Ok(())
    }
}

/// RCODEEX of an AUTH_Failure: why authentication failed (NVMe Base 2.0, Figure 467).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FailureReason {
    Failed = 1,
    NotUsable = 2,
    ConcatMismatch = 3,
    HashUnusable = 4,
    DhGroupUnusable = 5,
    IncorrectPayload = 6,
    IncorrectMessage = 7,
}

impl FailureReason {
    const ALL: [FailureReason; 7] = [
        FailureReason::Failed,
        FailureReason::NotUsable,
        FailureReason::ConcatMismatch,
        FailureReason::HashUnusable,
        FailureReason::DhGroupUnusable,
        FailureReason::IncorrectPayload,
        FailureReason::IncorrectMessage,
    ];

    pub fn from_code(code: u8) -> Option<FailureReason> {
        FailureReason::ALL.into_iter().find(|reason| reason.code() == code)
    }

    pub fn code(self) -> u8 {
        self as u8
    }

    /// The spec's wording, for logs.
    pub fn describe(self) -> &'static str {
        match self {
            FailureReason::Failed => "authentication failed",
            FailureReason::NotUsable => "authentication protocol not usable",
            FailureReason::ConcatMismatch => "secure channel concatenation mismatch",
            FailureReason::HashUnusable => "hash function not usable",
            FailureReason::DhGroupUnusable => "DH group not usable",
            FailureReason::IncorrectPayload => "incorrect payload",
            FailureReason::IncorrectMessage => "incorrect protocol message",
        }
    }
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// The first eight bytes, common to every message.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct RawHeader {
    auth_type: u8,
    auth_id: u8,
    reserved: [u8; 2],
    transaction: U16,
    message_specific: [u8; 2],
}
const _: () = assert!(size_of::<RawHeader>() == 8);

/// AUTH_Negotiate with its one protocol descriptor (NVMe Base 2.0, Figures 462 and 463).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct RawNegotiate {
    auth_type: u8,
    auth_id: u8,
    reserved: [u8; 2],
    transaction: U16,
    sc_c: u8,
    /// NAPD: the number of protocol descriptors.
    descriptor_count: u8,
    protocol: u8,
    reserved2: u8,
    /// HALEN.
    hash_count: u8,
    /// DHLEN.
    group_count: u8,
    hash_ids: [u8; ID_LIST_MAX],
    group_ids: [u8; ID_LIST_MAX],
}
const NEGOTIATE_BYTES: usize = 72;
const _: () = assert!(size_of::<RawNegotiate>() == NEGOTIATE_BYTES);

/// DH-HMAC-CHAP_Challenge up to C1 (NVMe Base 2.0, Figure 464).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct RawChallenge {
    auth_type: u8,
    auth_id: u8,
    reserved: [u8; 2],
    transaction: U16,
    hash_len: u8,
    reserved2: u8,
    hash_id: u8,
    group_id: u8,
    dh_value_len: U16,
    sequence: U32,
}
const _: () = assert!(size_of::<RawChallenge>() == 16);

/// DH-HMAC-CHAP_Reply up to R1 (NVMe Base 2.0, Figure 465).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct RawReply {
    auth_type: u8,
    auth_id: u8,
    reserved: [u8; 2],
    transaction: U16,
    hash_len: u8,
    reserved2: u8,
    challenge_valid: u8,
    reserved3: u8,
    dh_value_len: U16,
    sequence: U32,
}
const _: () = assert!(size_of::<RawReply>() == 16);

/// DH-HMAC-CHAP_Success1 up to R2 (NVMe Base 2.0, Figure 466).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct RawSuccess1 {
    auth_type: u8,
    auth_id: u8,
    reserved: [u8; 2],
    transaction: U16,
    hash_len: u8,
    reserved2: u8,
    /// RVALID in bit 0.
    response_valid: u8,
    reserved3: [u8; 7],
}
const _: () = assert!(size_of::<RawSuccess1>() == 16);
const RESPONSE_VALID: u8 = 1 << 0;

/// DH-HMAC-CHAP_Success2 (NVMe Base 2.0, Figure 468).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct RawSuccess2 {
    auth_type: u8,
    auth_id: u8,
    reserved: [u8; 2],
    transaction: U16,
    reserved2: [u8; 10],
}
const _: () = assert!(size_of::<RawSuccess2>() == 16);

/// AUTH_Failure1 and AUTH_Failure2 (NVMe Base 2.0, Figure 467).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct RawFailure {
    auth_type: u8,
    auth_id: u8,
    reserved: [u8; 2],
    transaction: U16,
    rescode: u8,
    /// RCODEEX.
    explanation: u8,
}
const _: () = assert!(size_of::<RawFailure>() == 8);

/// What every message starts with: enough to dispatch it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub auth_type: u8,
    pub auth_id: u8,
    /// T_ID.
    pub transaction: u16,
}

/// The common header, if `bytes` holds at least the eight bytes of the shortest message.
pub fn header(bytes: &[u8]) -> Option<Header> {
    let (raw, _) = RawHeader::ref_from_prefix(bytes).ok()?;
    Some(Header { auth_type: raw.auth_type, auth_id: raw.auth_id, transaction: raw.transaction.get() })
}

/// AUTH_Negotiate, host to controller: the hashes and DH groups the host offers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Negotiate {
    pub transaction: u16,
    /// SC_C: secure channel concatenation; 0 unless the host asks for TLS.
    pub sc_c: u8,
    /// NAPD: the number of protocol descriptors (1 once parsed).
    pub napd: u8,
    /// AUTH-ID of the descriptor (DH-HMAC-CHAP once parsed).
    pub auth_id: u8,
    /// HashIDList, in the host's order, HALEN entries.
    pub hashes: Vec<u8>,
    /// DHgIDList, in the host's order, DHLEN entries.
    pub groups: Vec<u8>,
}

impl Negotiate {
    /// Checks the fields as nvmet does and in its order. The caller has dispatched on
    /// [`header`], whose T_ID a Failure1 echoes even when this fails.
    pub fn parse(bytes: &[u8]) -> Result<Negotiate, FailureReason> {
        let (raw, _) = RawNegotiate::ref_from_prefix(bytes).map_err(|_| FailureReason::IncorrectPayload)?;
        if raw.sc_c != 0 {
            return Err(FailureReason::ConcatMismatch);
        }
        // nvmet's choice of reason for a descriptor count other than one.
        if raw.descriptor_count != 1 {
            return Err(FailureReason::HashUnusable);
        }
        if raw.protocol != PROTOCOL_DHCHAP {
            return Err(FailureReason::IncorrectPayload);
        }
        let hashes = raw.hash_ids.get(..usize::from(raw.hash_count));
        let groups = raw.group_ids.get(..usize::from(raw.group_count));
        let (Some(hashes), Some(groups)) = (hashes, groups) else {
            return Err(FailureReason::IncorrectPayload);
        };
        Ok(Negotiate {
            transaction: raw.transaction.get(),
            sc_c: raw.sc_c,
            napd: raw.descriptor_count,
            auth_id: raw.protocol,
            hashes: hashes.to_vec(),
            groups: groups.to_vec(),
        })
    }

    /// The 72-byte message, as the Linux host sends it; lists longer than 30 entries
    /// are cut.
    pub fn encode(&self) -> Vec<u8> {
        let mut raw = RawNegotiate::new_zeroed();
        raw.auth_type = AUTH_TYPE_COMMON;
        raw.auth_id = NEGOTIATE;
        raw.transaction = U16::new(self.transaction);
        raw.sc_c = self.sc_c;
        raw.descriptor_count = self.napd;
        raw.protocol = self.auth_id;
        raw.hash_count = fill_list(&mut raw.hash_ids, &self.hashes);
        raw.group_count = fill_list(&mut raw.group_ids, &self.groups);
        raw.as_bytes().to_vec()
    }
}

/// Copies up to 30 ids into `list` and returns how many.
fn fill_list(list: &mut [u8; ID_LIST_MAX], ids: &[u8]) -> u8 {
    for (slot, id) in list.iter_mut().zip(ids) {
        *slot = *id;
    }
    // At most 30: fits.
    ids.len().min(ID_LIST_MAX) as u8
}

/// A length field for a value the caller keeps within the protocol's limits (at most
/// 1024 bytes); anything longer saturates rather than wrapping to a small length.
fn u16_len(bytes: &[u8]) -> u16 {
    u16::try_from(bytes.len()).unwrap_or(u16::MAX)
}

/// DH-HMAC-CHAP_Challenge, controller to host: `16 + hash_len + DHVLEN` bytes.
/// `challenge` is C1 (`hash_len` bytes) and `dh_value` is g^x mod p (empty for the NULL
/// group).
pub fn encode_challenge(transaction: u16, hash_id: u8, hash_len: u8, group_id: u8, sequence: u32, challenge: &[u8], dh_value: &[u8]) -> Vec<u8> {
    let raw = RawChallenge {
        auth_type: AUTH_TYPE_DHCHAP,
        auth_id: CHALLENGE,
        reserved: [0; 2],
        transaction: U16::new(transaction),
        hash_len,
        reserved2: 0,
        hash_id,
        group_id,
        dh_value_len: U16::new(u16_len(dh_value)),
        sequence: U32::new(sequence),
    };
    [raw.as_bytes(), challenge, dh_value].concat()
}

/// DH-HMAC-CHAP_Challenge, parsed (for a test host).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Challenge<'a> {
    pub transaction: u16,
    pub hash_id: u8,
    /// HL.
    pub hash_len: u8,
    /// DHgID.
    pub group_id: u8,
    /// SEQNUM: S1.
    pub sequence: u32,
    /// C1.
    pub challenge: &'a [u8],
    /// g^x mod p; empty for the NULL group.
    pub dh_value: &'a [u8],
}

impl<'a> Challenge<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<Challenge<'a>, FailureReason> {
        let (raw, rest) = RawChallenge::ref_from_prefix(bytes).map_err(|_| FailureReason::IncorrectPayload)?;
        let (challenge, rest) = rest.split_at_checked(usize::from(raw.hash_len)).ok_or(FailureReason::IncorrectPayload)?;
        let dh_value = rest.get(..usize::from(raw.dh_value_len.get())).ok_or(FailureReason::IncorrectPayload)?;
        Ok(Challenge {
            transaction: raw.transaction.get(),
            hash_id: raw.hash_id,
            hash_len: raw.hash_len,
            group_id: raw.group_id,
            sequence: raw.sequence.get(),
            challenge,
            dh_value,
        })
    }
}

/// DH-HMAC-CHAP_Reply, host to controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reply<'a> {
    pub transaction: u16,
    /// HL: the length of R1 and of C2.
    pub hash_len: u8,
    /// CVALID: the host asks the controller to authenticate itself with C2.
    pub cvalid: bool,
    /// SEQNUM: S2.
    pub sequence: u32,
    /// R1.
    pub response: &'a [u8],
    /// C2; present (and zero) even when CVALID is 0.
    pub challenge: &'a [u8],
    /// g^y mod p; empty with the NULL group.
    pub dh_value: &'a [u8],
}

impl<'a> Reply<'a> {
    /// Checks TL ≥ 16 and 16 + 2·HL + DHVLEN ≤ TL as nvmet does, and CVALID ∈ {0, 1}.
    pub fn parse(bytes: &'a [u8]) -> Result<Reply<'a>, FailureReason> {
        let (raw, rest) = RawReply::ref_from_prefix(bytes).map_err(|_| FailureReason::IncorrectPayload)?;
        let hash_len = usize::from(raw.hash_len);
        let (response, rest) = rest.split_at_checked(hash_len).ok_or(FailureReason::IncorrectPayload)?;
        let (challenge, rest) = rest.split_at_checked(hash_len).ok_or(FailureReason::IncorrectPayload)?;
        let dh_value = rest.get(..usize::from(raw.dh_value_len.get())).ok_or(FailureReason::IncorrectPayload)?;
        let cvalid = match raw.challenge_valid {
            0 => false,
            1 => true,
            _ => return Err(FailureReason::IncorrectPayload),
        };
        Ok(Reply { transaction: raw.transaction.get(), hash_len: raw.hash_len, cvalid, sequence: raw.sequence.get(), response, challenge, dh_value })
    }
}

/// DH-HMAC-CHAP_Reply (for a test host). HL is `response`'s length; `challenge` is C2,
/// as long as `response` (zeros when `cvalid` is false).
pub fn encode_reply(transaction: u16, sequence: u32, cvalid: bool, response: &[u8], challenge: &[u8], dh_value: &[u8]) -> Vec<u8> {
    let raw = RawReply {
        auth_type: AUTH_TYPE_DHCHAP,
        auth_id: REPLY,
        reserved: [0; 2],
        transaction: U16::new(transaction),
        hash_len: u8::try_from(response.len()).unwrap_or(u8::MAX),
        reserved2: 0,
        challenge_valid: u8::from(cvalid),
        reserved3: 0,
        dh_value_len: U16::new(u16_len(dh_value)),
        sequence: U32::new(sequence),
    };
    [raw.as_bytes(), response, challenge, dh_value].concat()
}

/// DH-HMAC-CHAP_Success1, controller to host. HL is always set (the host checks it);
/// RVALID and R2 only when the host asked for controller authentication.
pub fn encode_success1(transaction: u16, hash_len: u8, response: Option<&[u8]>) -> Vec<u8> {
    let mut raw = RawSuccess1::new_zeroed();
    raw.auth_type = AUTH_TYPE_DHCHAP;
    raw.auth_id = SUCCESS1;
    raw.transaction = U16::new(transaction);
    raw.hash_len = hash_len;
    raw.response_valid = if response.is_some() { RESPONSE_VALID } else { 0 };
    [raw.as_bytes(), response.unwrap_or_default()].concat()
}

/// DH-HMAC-CHAP_Success1, parsed (for a test host).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Success1<'a> {
    pub transaction: u16,
    /// HL.
    pub hash_len: u8,
    /// R2, when RVALID is set.
    pub response: Option<&'a [u8]>,
}

impl<'a> Success1<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<Success1<'a>, FailureReason> {
        let (raw, rest) = RawSuccess1::ref_from_prefix(bytes).map_err(|_| FailureReason::IncorrectPayload)?;
        let response = if raw.response_valid & RESPONSE_VALID != 0 {
            Some(rest.get(..usize::from(raw.hash_len)).ok_or(FailureReason::IncorrectPayload)?)
        } else {
            None
        };
        Ok(Success1 { transaction: raw.transaction.get(), hash_len: raw.hash_len, response })
    }
}

/// DH-HMAC-CHAP_Success2, host to controller (for a test host): 16 bytes.
pub fn encode_success2(transaction: u16) -> Vec<u8> {
    let mut raw = RawSuccess2::new_zeroed();
    raw.auth_type = AUTH_TYPE_DHCHAP;
    raw.auth_id = SUCCESS2;
    raw.transaction = U16::new(transaction);
    raw.as_bytes().to_vec()
}

fn encode_failure(auth_id: u8, transaction: u16, reason: FailureReason) -> Vec<u8> {
    let raw = RawFailure {
        auth_type: AUTH_TYPE_COMMON,
        auth_id,
        reserved: [0; 2],
        transaction: U16::new(transaction),
        rescode: RESCODE_FAILURE,
        explanation: reason.code(),
    };
    raw.as_bytes().to_vec()
}

/// AUTH_Failure1, controller to host: 8 bytes.
pub fn encode_failure1(transaction: u16, reason: FailureReason) -> Vec<u8> {
    encode_failure(FAILURE1, transaction, reason)
}

/// AUTH_Failure2, host to controller (for a test host): 8 bytes.
pub fn encode_failure2(transaction: u16, reason: FailureReason) -> Vec<u8> {
    encode_failure(FAILURE2, transaction, reason)
}

/// AUTH_Failure1 or AUTH_Failure2, parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Failure {
    pub transaction: u16,
    /// RESCODE; 01h is the only value defined.
    pub rescode: u8,
    /// RCODEEX as sent; [`Failure::reason`] decodes it.
    pub explanation: u8,
}

impl Failure {
    pub fn parse(bytes: &[u8]) -> Result<Failure, FailureReason> {
        let (raw, _) = RawFailure::ref_from_prefix(bytes).map_err(|_| FailureReason::IncorrectPayload)?;
        Ok(Failure { transaction: raw.transaction.get(), rescode: raw.rescode, explanation: raw.explanation })
    }

    pub fn reason(&self) -> Option<FailureReason> {
        FailureReason::from_code(self.explanation)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use zerocopy::little_endian::U32 as LeU32;

    use super::*;

    /// What the Linux host sends: T_ID 0x0102, SHA-256/384/512, all six groups.
    fn golden_negotiate() -> [u8; 72] {
        let mut bytes = [0u8; 72];
        bytes[..12].copy_from_slice(&[0x00, 0x00, 0, 0, 0x02, 0x01, 0x00, 0x01, 0x01, 0, 3, 6]);
        bytes[12..15].copy_from_slice(&[1, 2, 3]);
        bytes[42..48].copy_from_slice(&[0, 1, 2, 3, 4, 5]);
        bytes
    }

    #[test]
    fn negotiate_golden_bytes() {
        let negotiate = Negotiate::parse(&golden_negotiate()).unwrap();
        assert_eq!(
            negotiate,
            Negotiate { transaction: 0x0102, sc_c: 0, napd: 1, auth_id: 1, hashes: vec![1, 2, 3], groups: vec![0, 1, 2, 3, 4, 5] }
        );
        assert_eq!(negotiate.encode(), golden_negotiate());
        assert_eq!(header(&golden_negotiate()), Some(Header { auth_type: AUTH_TYPE_COMMON, auth_id: NEGOTIATE, transaction: 0x0102 }));
    }

    #[test]
    fn negotiate_rejections_in_nvmet_order() {
        let golden = golden_negotiate();
        assert_eq!(Negotiate::parse(&golden[..71]), Err(FailureReason::IncorrectPayload));
        assert_eq!(Negotiate::parse(&[]), Err(FailureReason::IncorrectPayload));
        let with = |changes: &[(usize, u8)]| {
            let mut bytes = golden;
            for &(offset, value) in changes {
                bytes[offset] = value;
            }
            Negotiate::parse(&bytes)
        };
        assert_eq!(with(&[(6, 2)]), Err(FailureReason::ConcatMismatch));
        assert_eq!(with(&[(6, 2), (7, 0)]), Err(FailureReason::ConcatMismatch), "SC_C is checked first");
        assert_eq!(with(&[(7, 0)]), Err(FailureReason::HashUnusable));
        assert_eq!(with(&[(7, 2)]), Err(FailureReason::HashUnusable));
        assert_eq!(with(&[(7, 2), (8, 2)]), Err(FailureReason::HashUnusable), "NAPD before AUTH-ID");
        assert_eq!(with(&[(8, 2)]), Err(FailureReason::IncorrectPayload));
        assert_eq!(with(&[(10, 31)]), Err(FailureReason::IncorrectPayload));
        assert_eq!(with(&[(11, 31)]), Err(FailureReason::IncorrectPayload));
        assert_eq!(with(&[(10, 30), (11, 30)]).map(|n| (n.hashes.len(), n.groups.len())), Ok((30, 30)));
        assert_eq!(with(&[(10, 0), (11, 0)]).map(|n| (n.hashes, n.groups)), Ok((vec![], vec![])));
        let mut longer = golden.to_vec();
        longer.extend_from_slice(&[0xAA; 64]);
        assert!(Negotiate::parse(&longer).is_ok(), "a second descriptor's bytes are ignored");
    }

    #[test]
    fn challenge_golden_bytes() {
        let c1 = [0x40u8; 32];
        let dh_value = [0x55u8; 256];
        let bytes = encode_challenge(0x0102, 1, 32, 1, 0x1122_3344, &c1, &dh_value);
        let mut expected = vec![0x01, 0x01, 0, 0, 0x02, 0x01, 32, 0, 1, 1, 0x00, 0x01, 0x44, 0x33, 0x22, 0x11];
        expected.extend_from_slice(&c1);
        expected.extend_from_slice(&dh_value);
        assert_eq!(bytes, expected);
        let parsed = Challenge::parse(&bytes).unwrap();
        assert_eq!(
            parsed,
            Challenge { transaction: 0x0102, hash_id: 1, hash_len: 32, group_id: 1, sequence: 0x1122_3344, challenge: &c1, dh_value: &dh_value }
        );
        let null = encode_challenge(7, 3, 64, 0, 9, &[0x40; 64], &[]);
        assert_eq!(null.len(), 80);
        assert_eq!(&null[..16], &[0x01, 0x01, 0, 0, 7, 0, 64, 0, 3, 0, 0, 0, 9, 0, 0, 0]);
        assert_eq!(Challenge::parse(&bytes[..bytes.len() - 1]), Err(FailureReason::IncorrectPayload));
        assert_eq!(Challenge::parse(&bytes[..40]), Err(FailureReason::IncorrectPayload));
    }

    /// A Reply as the Linux host sends it: SHA-256, CVALID 1, S2 0x55667788, ffdhe2048.
    fn golden_reply() -> Vec<u8> {
        let mut bytes = vec![0x01, 0x02, 0, 0, 0x05, 0x00, 32, 0, 1, 0, 0x00, 0x01, 0x88, 0x77, 0x66, 0x55];
        bytes.extend_from_slice(&[0xA1; 32]);
        bytes.extend_from_slice(&[0xC2; 32]);
        bytes.extend_from_slice(&[0xD4; 256]);
        bytes
    }

    #[test]
    fn reply_golden_bytes() {
        let bytes = golden_reply();
        let reply = Reply::parse(&bytes).unwrap();
        assert_eq!(
            reply,
            Reply { transaction: 5, hash_len: 32, cvalid: true, sequence: 0x5566_7788, response: &[0xA1; 32], challenge: &[0xC2; 32], dh_value: &[0xD4; 256] }
        );
        assert_eq!(encode_reply(5, 0x5566_7788, true, &[0xA1; 32], &[0xC2; 32], &[0xD4; 256]), bytes);
        let null = encode_reply(1, 2, false, &[0xA1; 48], &[0; 48], &[]);
        assert_eq!(&null[..16], &[0x01, 0x02, 0, 0, 1, 0, 48, 0, 0, 0, 0, 0, 2, 0, 0, 0]);
        let reply = Reply::parse(&null).unwrap();
        assert_eq!((reply.cvalid, reply.challenge, reply.dh_value), (false, &[0u8; 48][..], &[][..]), "C2 is there even without CVALID");
    }

    #[test]
    fn reply_rejections() {
        let bytes = golden_reply();
        assert_eq!(Reply::parse(&bytes[..15]), Err(FailureReason::IncorrectPayload));
        assert_eq!(Reply::parse(&bytes[..bytes.len() - 1]), Err(FailureReason::IncorrectPayload), "DHVLEN past TL");
        assert_eq!(Reply::parse(&bytes[..16 + 63]), Err(FailureReason::IncorrectPayload), "C2 cut");
        let mut cvalid = bytes.clone();
        cvalid[8] = 2;
        assert_eq!(Reply::parse(&cvalid), Err(FailureReason::IncorrectPayload));
        let mut dh_value_len = bytes.clone();
        dh_value_len[10..12].copy_from_slice(&0xFFFFu16.to_le_bytes());
        assert_eq!(Reply::parse(&dh_value_len), Err(FailureReason::IncorrectPayload));
        let mut hash_len = bytes.clone();
        hash_len[6] = 0xFF;
        assert_eq!(Reply::parse(&hash_len), Err(FailureReason::IncorrectPayload));
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Reply::parse(&longer).is_ok(), "nvmet takes TL above the message");
    }

    #[test]
    fn success1_golden_bytes() {
        let without = encode_success1(0x0102, 48, None);
        assert_eq!(without, [0x01, 0x03, 0, 0, 0x02, 0x01, 48, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(Success1::parse(&without), Ok(Success1 { transaction: 0x0102, hash_len: 48, response: None }));
        let with = encode_success1(3, 32, Some(&[0xB2; 32]));
        let mut expected = vec![0x01, 0x03, 0, 0, 3, 0, 32, 0, 1, 0, 0, 0, 0, 0, 0, 0];
        expected.extend_from_slice(&[0xB2; 32]);
        assert_eq!(with, expected);
        assert_eq!(Success1::parse(&with), Ok(Success1 { transaction: 3, hash_len: 32, response: Some(&[0xB2; 32]) }));
        assert_eq!(Success1::parse(&with[..47]), Err(FailureReason::IncorrectPayload));
        assert_eq!(Success1::parse(&with[..15]), Err(FailureReason::IncorrectPayload));
    }

    #[test]
    fn success2_and_failures_golden_bytes() {
        assert_eq!(encode_success2(0x0102), [0x01, 0x04, 0, 0, 0x02, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let failure1 = encode_failure1(0x0102, FailureReason::IncorrectPayload);
        assert_eq!(failure1, [0x00, 0xF1, 0, 0, 0x02, 0x01, 0x01, 0x06]);
        assert_eq!(encode_failure2(9, FailureReason::Failed), [0x00, 0xF0, 0, 0, 9, 0, 0x01, 0x01]);
        let parsed = Failure::parse(&failure1).unwrap();
        assert_eq!(parsed, Failure { transaction: 0x0102, rescode: 1, explanation: 6 });
        assert_eq!(parsed.reason(), Some(FailureReason::IncorrectPayload));
        assert_eq!(Failure::parse(&failure1[..7]), Err(FailureReason::IncorrectPayload));
        assert_eq!(header(&failure1[..7]), None);
        assert_eq!(header(&failure1).map(|h| (h.auth_type, h.auth_id)), Some((AUTH_TYPE_COMMON, FAILURE1)));
    }

    #[test]
    fn failure_reasons() {
        for code in 1..=7 {
            let reason = FailureReason::from_code(code).unwrap();
            assert_eq!(reason.code(), code);
            assert!(!reason.describe().is_empty());
        }
        assert_eq!(FailureReason::from_code(0), None);
        assert_eq!(FailureReason::from_code(8), None);
        assert_eq!(FailureReason::DhGroupUnusable.to_string(), "DH group not usable");
    }

    #[test]
    fn auth_command_fields() {
        let command = RawCommand { cdw10: LeU32::new(0xE9_01_01_00), cdw11: LeU32::new(4096), ..RawCommand::default() };
        let parsed = AuthCommand::parse(&command);
        assert_eq!(parsed, AuthCommand { security_protocol: 0xE9, spsp0: 1, spsp1: 1, length_bytes: 4096 });
        assert_eq!(parsed.check_protocol(), Ok(()));
        assert_eq!(AuthCommand { security_protocol: 0xEA, ..parsed }.check_protocol(), Err(43));
        assert_eq!(AuthCommand { spsp0: 0, spsp1: 0, ..parsed }.check_protocol(), Err(41));
        assert_eq!(AuthCommand { spsp1: 2, ..parsed }.check_protocol(), Err(42));
        assert_eq!(AUTHREQ_ATR, 0x0002_0000);
    }

    /// Every parser on every prefix of every golden message: no panic, and each prefix
    /// shorter than the message is refused or parses to less.
    #[test]
    fn truncations_never_panic() {
        let messages = [
            golden_negotiate().to_vec(),
            golden_reply(),
            encode_challenge(1, 1, 32, 1, 1, &[1; 32], &[2; 256]),
            encode_success1(1, 64, Some(&[3; 64])),
            encode_success2(1),
            encode_failure1(1, FailureReason::Failed),
        ];
        for message in &messages {
            for len in 0..=message.len() {
                parse_all(&message[..len]);
            }
        }
    }

    fn parse_all(bytes: &[u8]) {
        let _ = header(bytes);
        let _ = Negotiate::parse(bytes);
        let _ = Challenge::parse(bytes);
        let _ = Reply::parse(bytes);
        let _ = Success1::parse(bytes);
        let _ = Failure::parse(bytes);
    }

    proptest! {
        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1200)) {
            parse_all(&bytes);
        }

        #[test]
        fn reply_slices_stay_inside(fixed in proptest::collection::vec(any::<u8>(), 16), tail in proptest::collection::vec(any::<u8>(), 0..700)) {
            let bytes = [fixed, tail].concat();
            if let Ok(reply) = Reply::parse(&bytes) {
                let hash_len = usize::from(reply.hash_len);
                prop_assert_eq!(reply.response.len(), hash_len);
                prop_assert_eq!(reply.challenge.len(), hash_len);
                prop_assert!(16 + 2 * hash_len + reply.dh_value.len() <= bytes.len());
                prop_assert_eq!(reply.dh_value, &bytes[16 + 2 * hash_len..][..reply.dh_value.len()]);
            }
        }

        #[test]
        fn negotiate_round_trips(transaction: u16, hashes in proptest::collection::vec(any::<u8>(), 0..=30), groups in proptest::collection::vec(any::<u8>(), 0..=30)) {
            let negotiate = Negotiate { transaction, sc_c: 0, napd: 1, auth_id: PROTOCOL_DHCHAP, hashes, groups };
            prop_assert_eq!(Negotiate::parse(&negotiate.encode()), Ok(negotiate));
        }
    }
}
