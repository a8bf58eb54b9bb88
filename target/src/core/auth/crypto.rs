//! The DH-HMAC-CHAP computations (NVMe Base 2.0, section 8.13.5): the responses R1 and
//! R2 and the session key here, and, re-exported so that one path names them all, the
//! hash functions, the key exchange and the secrets. Pure; the only input from outside
//! is the operating system's random generator.

use zeroize::Zeroizing;

pub use super::dh::{DhGroup, DhKeyPair};
pub use super::primitives::{constant_time_eq, random_bytes, random_sequence, CryptoError, HashFunction};
pub use super::secret::{Secret, SecretError};

/// Which side a response authenticates, which fixes its label and the order of the
/// NQNs in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// R1, from the host: "HostHost", host NQN, subsystem NQN.
    Host,
    /// R2, from the controller: "Controller", subsystem NQN, host NQN.
    Controller,
}

/// The response R1 (`Role::Host`) or R2 (`Role::Controller`) of NVMe Base 2.0,
/// section 8.13.5.1:
/// `HMAC_H(key, C ‖ LE32(sequence) ‖ LE16(transaction) ‖ SC_C ‖ label ‖ NQN ‖ 00h ‖ NQN)`.
///
/// `key` is the transformed key ([`super::Secret::transform`]): the host's with the
/// host NQN for R1, the controller's with the subsystem NQN for R2. `challenge` is C1
/// for R1 and C2 for R2. With a DH group, `session_key` is Ks and the challenge enters
/// as `HMAC_H(Ks, challenge)`; with the NULL group it enters as it is. `sequence` is S1
/// for R1 and S2 for R2. The NQNs are given in their natural order, without NUL; the
/// role orders them.
#[allow(clippy::too_many_arguments, reason = "each is one named input of the spec's formula")]
pub fn response(
    hash: HashFunction,
    key: &[u8],
    challenge: &[u8],
    session_key: Option<&[u8]>,
    sequence: u32,
    transaction: u16,
    sc_c: u8,
    role: Role,
    host_nqn: &str,
    subsystem_nqn: &str,
) -> Zeroizing<Vec<u8>> {
    let augmented;
    let challenge = match session_key {
        Some(session_key) => {
            augmented = hash.hmac(session_key, &[challenge]);
            augmented.as_slice()
        }
        None => challenge,
    };
    let (label, first_nqn, second_nqn): (&[u8], &str, &str) = match role {
        Role::Host => (b"HostHost", host_nqn, subsystem_nqn),
        Role::Controller => (b"Controller", subsystem_nqn, host_nqn),
    };
    hash.hmac(
        key,
        &[
            challenge,
            &sequence.to_le_bytes(),
            &transaction.to_le_bytes(),
            &[sc_c],
            label,
            first_nqn.as_bytes(),
            &[0],
            second_nqn.as_bytes(),
        ],
    )
}

/// Ks = H(Z): the session key, from the shared secret Z as the group's full-width
/// big-endian bytes (leading zeros included).
pub fn session_key(hash: HashFunction, shared_secret: &[u8]) -> Zeroizing<Vec<u8>> {
    hash.digest(shared_secret)
}

/// The inputs of the test vectors (the DH-HMAC-CHAP notes, section 5), shared by the
/// tests of the authentication modules.
#[cfg(test)]
pub(crate) mod testing {
    pub const HOST_NQN: &str = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-000000000001";
    pub const SUBSYSTEM_NQN: &str = "nqn.2024-01.io.p2ptgt:test";
    /// S1, S2 and T_ID.
    pub const S1: u32 = 0x1122_3344;
    pub const S2: u32 = 0x5566_7788;
    pub const TRANSACTION: u16 = 5;

    /// Bytes `start`, `start + 1`, ... of length `len` (the vectors' C1, C2 and keys).
    pub fn counting(start: u8, len: usize) -> Vec<u8> {
        (0..len).map(|i| start.wrapping_add(i as u8)).collect()
    }

    /// Lower-case hex, as the vectors are written.
    pub fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    /// R1 and R2 with the NULL group: the challenge enters unchanged.
    fn null_group(hash: HashFunction, host_key: &[u8], controller_key: &[u8]) -> (String, String) {
        let r1 = response(hash, host_key, &counting(0x40, hash.len()), None, S1, TRANSACTION, 0, Role::Host, HOST_NQN, SUBSYSTEM_NQN);
        let r2 = response(hash, controller_key, &counting(0x80, hash.len()), None, S2, TRANSACTION, 0, Role::Controller, HOST_NQN, SUBSYSTEM_NQN);
        (hex(&r1), hex(&r2))
    }

    #[test]
    fn null_group_responses_with_an_untransformed_key() {
        let key = counting(0, 32);
        let (r1, r2) = null_group(HashFunction::Sha256, &key, &key);
        assert_eq!(r1, "2680f087ea82d44baf28b1bfd6f1b84ea48adcf593c6513c34443542b1d2df13");
        assert_eq!(r2, "3bb88f176e1cae3f8c96cee3640debec9925939408236c5945480e4c2e5f2e27");
        let (r1, r2) = null_group(HashFunction::Sha384, &key, &key);
        assert_eq!(r1, "41678e6d7fde71f7a0c37028134a3f05f0b5f6a22e98195ede8935e2d191b18f988460aba8972dcd33dc7fe0a399b78f");
        assert_eq!(r2, "484eb56cbad8d71adcce5402676e0184596aa7a6f97d1f6b787ca01d0b67c5e95588522c9416bf897fd3c3ec08aa6cf7");
        let (r1, r2) = null_group(HashFunction::Sha512, &key, &key);
        assert_eq!(r1, "19de48442ec1d1fcd0aad68d0fb68a67879fe7420704e463ecf3275f7ec07c07ed9a219ad03eb190f38974c5898907fc3d79e9f30a4002924a62fb1be12b2dea");
        assert_eq!(r2, "4c446a60fb202272f6ef4e62101618d574e02b4167fbde118a74a97a0dc940cbdf616f419141bdf2db28750dd2039e0452aafb03f26dcd2071a28db147761e1b");
    }

    #[test]
    fn session_key_is_the_digest_of_z() {
        assert_eq!(
            hex(&session_key(HashFunction::Sha256, b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

}
