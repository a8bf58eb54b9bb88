//! What the other authentication modules build on: the hash functions by HashID, the
//! error type, constant-time comparison and the operating system's random generator.
//! Pure functions apart from reading that generator.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256, Sha384, Sha512};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// What the key exchange or the random generator could not do.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("reading the operating system's random generator failed")]
    Random(#[source] getrandom::Error),
    #[error("the NULL DH group has no key exchange")]
    NullGroup,
    #[error("the host's DH value is {actual} bytes; the group's is {expected}")]
    PeerValueLength { expected: usize, actual: usize },
    /// The host's value is 0, 1, p-1 or not below p: it has order 1 or 2, or is no
    /// group element at all.
    #[error("the host's DH value is outside 2..=p-2")]
    PeerValueOutOfRange,
    /// The embedded prime did not make Montgomery parameters: a build defect, reported
    /// rather than panicking on the data path.
    #[error("the DH group's modulus could not be set up")]
    GroupParameters,
}

/// A DH-HMAC-CHAP hash function by HashID (NVMe Base 2.0, Figure 470).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum HashFunction {
    Sha256 = 1,
    Sha384 = 2,
    Sha512 = 3,
}

impl HashFunction {
    pub const ALL: [HashFunction; 3] = [HashFunction::Sha256, HashFunction::Sha384, HashFunction::Sha512];

    pub fn from_id(id: u8) -> Option<HashFunction> {
        HashFunction::ALL.into_iter().find(|hash| hash.id() == id)
    }

    pub fn id(self) -> u8 {
        self as u8
    }

    /// The digest length in bytes, which is HL in the messages.
    #[allow(clippy::len_without_is_empty, reason = "a digest length, not a container's")]
    pub fn len(self) -> usize {
        match self {
            HashFunction::Sha256 => 32,
            HashFunction::Sha384 => 48,
            HashFunction::Sha512 => 64,
        }
    }

    /// The name nvmet's configfs `dhchap_hash` shows and nvmetcli saves.
    pub fn name(self) -> &'static str {
        match self {
            HashFunction::Sha256 => "hmac(sha256)",
            HashFunction::Sha384 => "hmac(sha384)",
            HashFunction::Sha512 => "hmac(sha512)",
        }
    }

    /// The names nvmet's configfs accepts: "hmac(sha256)", "hmac(sha384)",
    /// "hmac(sha512)". Surrounding white space (the newline `echo` writes) is ignored;
    /// nvmet matches a prefix, which this stricter match otherwise agrees with.
    pub fn from_name(name: &str) -> Option<HashFunction> {
        let name = name.trim();
        HashFunction::ALL.into_iter().find(|hash| hash.name() == name)
    }

    /// HMAC (RFC 2104) with this hash over the concatenation of `parts`.
    pub fn hmac(self, key: &[u8], parts: &[&[u8]]) -> Zeroizing<Vec<u8>> {
        match self {
            HashFunction::Sha256 => hmac_of::<Hmac<Sha256>>(key, parts),
            HashFunction::Sha384 => hmac_of::<Hmac<Sha384>>(key, parts),
            HashFunction::Sha512 => hmac_of::<Hmac<Sha512>>(key, parts),
        }
    }

    pub fn digest(self, data: &[u8]) -> Zeroizing<Vec<u8>> {
        match self {
            HashFunction::Sha256 => Zeroizing::new(Sha256::digest(data).to_vec()),
            HashFunction::Sha384 => Zeroizing::new(Sha384::digest(data).to_vec()),
            HashFunction::Sha512 => Zeroizing::new(Sha512::digest(data).to_vec()),
        }
    }
}

fn hmac_of<M: Mac + KeyInit>(key: &[u8], parts: &[&[u8]]) -> Zeroizing<Vec<u8>> {
    // HMAC takes keys of any length, so this never fails; if it did, the empty output
    // would match no response and authentication would fail closed.
    let Ok(mut mac) = <M as KeyInit>::new_from_slice(key) else {
        return Zeroizing::new(Vec::new());
    };
    for part in parts {
        mac.update(part);
    }
    Zeroizing::new(mac.finalize().into_bytes().to_vec())
}

/// Whether `a` and `b` are equal, in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// `len` bytes from the operating system's random generator (a challenge C1).
pub fn random_bytes(len: usize) -> Result<Vec<u8>, CryptoError> {
    let mut bytes = vec![0; len];
    getrandom::fill(&mut bytes).map_err(CryptoError::Random)?;
    Ok(bytes)
}

/// A random non-zero sequence number (S1): the host treats 0 as special.
pub fn random_sequence() -> Result<u32, CryptoError> {
    loop {
        let sequence = getrandom::u32().map_err(CryptoError::Random)?;
        if sequence != 0 {
            return Ok(sequence);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::crypto::testing::hex;
    use super::*;

    #[test]
    fn hash_ids_names_and_lengths() {
        for (id, len, name) in [(1, 32, "hmac(sha256)"), (2, 48, "hmac(sha384)"), (3, 64, "hmac(sha512)")] {
            let hash = HashFunction::from_id(id).unwrap();
            assert_eq!((hash.id(), hash.len(), hash.name()), (id, len, name));
            assert_eq!(HashFunction::from_name(name), Some(hash));
            assert_eq!(HashFunction::from_name(&format!("{name}\n")), Some(hash));
            assert_eq!(hash.digest(b"").len(), len);
            assert_eq!(hash.hmac(b"k", &[b"m"]).len(), len);
        }
        assert_eq!(HashFunction::from_id(0), None);
        assert_eq!(HashFunction::from_id(4), None);
        assert_eq!(HashFunction::from_name("sha256"), None);
        assert_eq!(HashFunction::from_name("hmac(sha1)"), None);
        assert_eq!(HashFunction::from_name(""), None);
    }

    /// RFC 4231 test case 2: HMAC with a key shorter than the block.
    #[test]
    fn hmac_matches_rfc_4231() {
        let mac = HashFunction::Sha256.hmac(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(hex(&mac), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }

    #[test]
    fn constant_time_eq_compares_contents_and_lengths() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn random_values() {
        let first = random_bytes(64).unwrap();
        assert_eq!(first.len(), 64);
        assert_ne!(first, random_bytes(64).unwrap());
        assert!(random_bytes(0).unwrap().is_empty());
        assert_ne!(random_sequence().unwrap(), 0);
    }
}
