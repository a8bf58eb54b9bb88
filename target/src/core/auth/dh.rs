//! Finite-field Diffie-Hellman in the RFC 7919 groups for the DH-HMAC-CHAP key exchange
//! (NVMe Base 2.0, section 8.13.5.3). Pure; the private exponent comes from the
//! operating system's random generator and is raised in constant time.

use std::cmp::Ordering;
use std::fmt;
use std::sync::OnceLock;

use crypto_bigint::modular::{BoxedMontyForm, BoxedMontyParams};
use crypto_bigint::{BoxedUint, Odd};
use zeroize::Zeroizing;

use super::primitives::CryptoError;
use super::ffdhe;

/// A DH group by DHgID (NVMe Base 2.0, Figure 471).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DhGroup {
    /// No key exchange: the challenges enter the responses as they are.
    Null = 0,
    Ffdhe2048 = 1,
    Ffdhe3072 = 2,
    Ffdhe4096 = 3,
    Ffdhe6144 = 4,
    Ffdhe8192 = 5,
}

/// What a group needs for its arithmetic.
struct Group {
    /// p, big-endian; its length is the DH value's length.
    prime: &'static [u8],
    modulus_bits: u32,
    /// The private exponent's length: the smallest power of two at least twice the
    /// group's security strength, as the Linux kernel draws it (SP 800-56A 5.6.1.1.3).
    exponent_bits: u32,
    exponent_bytes: usize,
    /// Montgomery parameters, built on first use; `None` only if `prime` were even.
    parameters: OnceLock<Option<BoxedMontyParams>>,
}

static FFDHE2048: Group = Group::new(&ffdhe::FFDHE2048, 2048, 256);
static FFDHE3072: Group = Group::new(&ffdhe::FFDHE3072, 3072, 256);
static FFDHE4096: Group = Group::new(&ffdhe::FFDHE4096, 4096, 512);
static FFDHE6144: Group = Group::new(&ffdhe::FFDHE6144, 6144, 512);
static FFDHE8192: Group = Group::new(&ffdhe::FFDHE8192, 8192, 512);

impl Group {
    const fn new(prime: &'static [u8], modulus_bits: u32, exponent_bits: u32) -> Group {
        let exponent_bytes = match exponent_bits {
            256 => 32,
            _ => 64,
        };
        Group { prime, modulus_bits, exponent_bits, exponent_bytes, parameters: OnceLock::new() }
    }

    fn parameters(&self) -> Result<&BoxedMontyParams, CryptoError> {
        let parameters = self.parameters.get_or_init(|| {
            let modulus = BoxedUint::from_be_slice(self.prime, self.modulus_bits).ok()?;
            // The modulus is public, so the faster variable-time set-up is fine.
            Odd::new(modulus).into_option().map(BoxedMontyParams::new_vartime)
        });
        parameters.as_ref().ok_or(CryptoError::GroupParameters)
    }
}

impl DhGroup {
    pub const ALL: [DhGroup; 6] =
        [DhGroup::Null, DhGroup::Ffdhe2048, DhGroup::Ffdhe3072, DhGroup::Ffdhe4096, DhGroup::Ffdhe6144, DhGroup::Ffdhe8192];

    pub fn from_id(id: u8) -> Option<DhGroup> {
        DhGroup::ALL.into_iter().find(|group| group.id() == id)
    }

    pub fn id(self) -> u8 {
        self as u8
    }

    /// The name nvmet's configfs `dhchap_dhgroup` shows and nvmetcli saves.
    pub fn name(self) -> &'static str {
        match self {
            DhGroup::Null => "null",
            DhGroup::Ffdhe2048 => "ffdhe2048",
            DhGroup::Ffdhe3072 => "ffdhe3072",
            DhGroup::Ffdhe4096 => "ffdhe4096",
            DhGroup::Ffdhe6144 => "ffdhe6144",
            DhGroup::Ffdhe8192 => "ffdhe8192",
        }
    }

    /// The names nvmet's configfs accepts, surrounding white space ignored.
    pub fn from_name(name: &str) -> Option<DhGroup> {
        let name = name.trim();
        DhGroup::ALL.into_iter().find(|group| group.name() == name)
    }

    /// DHVLEN: the length of a public value and of the shared secret, 0 for NULL.
    pub fn value_len(self) -> usize {
        self.group().map_or(0, |group| group.prime.len())
    }

    /// A fresh key pair: a uniform private exponent x in 2..2^N (N = 256 bits for
    /// ffdhe2048 and ffdhe3072, 512 for the larger groups) and g^x mod p.
    pub fn generate(self) -> Result<DhKeyPair, CryptoError> {
        let group = self.group().ok_or(CryptoError::NullGroup)?;
        let mut private = Zeroizing::new(vec![0u8; group.exponent_bytes]);
        loop {
            getrandom::fill(&mut private).map_err(CryptoError::Random)?;
            if is_above_one(&private) {
                return DhKeyPair::new(self, group, &private);
            }
        }
    }

    fn group(self) -> Option<&'static Group> {
        match self {
            DhGroup::Null => None,
            DhGroup::Ffdhe2048 => Some(&FFDHE2048),
            DhGroup::Ffdhe3072 => Some(&FFDHE3072),
            DhGroup::Ffdhe4096 => Some(&FFDHE4096),
            DhGroup::Ffdhe6144 => Some(&FFDHE6144),
            DhGroup::Ffdhe8192 => Some(&FFDHE8192),
        }
    }
}

/// The controller's side of one key exchange. The private exponent is wiped when the
/// pair is dropped and never shown.
pub struct DhKeyPair {
    group: DhGroup,
    private: Zeroizing<BoxedUint>,
    /// g^x mod p, big-endian, left-padded to the group's value length.
    public: Vec<u8>,
}

impl DhKeyPair {
    /// `private` is x, big-endian, at most the group's exponent length.
    fn new(group_id: DhGroup, group: &'static Group, private: &[u8]) -> Result<DhKeyPair, CryptoError> {
        let parameters = group.parameters()?;
        let private = Zeroizing::new(BoxedUint::from_be_slice_truncated(private, group.exponent_bits));
        let generator = BoxedUint::from_be_slice_truncated(&[2], group.modulus_bits);
        let public = BoxedMontyForm::new(generator, parameters).pow_bounded_exp(&private, group.exponent_bits);
        let public = public.retrieve().to_be_bytes().into_vec();
        // `to_be_bytes` gives every limb of a modulus-sized number: exactly p's length.
        if public.len() != group.prime.len() {
            return Err(CryptoError::GroupParameters);
        }
        Ok(DhKeyPair { group: group_id, private, public })
    }

    /// A pair with a chosen private exponent (big-endian, at most N bits), for test
    /// vectors.
    #[cfg(test)]
    pub(crate) fn from_private(group_id: DhGroup, private: &[u8]) -> Result<DhKeyPair, CryptoError> {
        let group = group_id.group().ok_or(CryptoError::NullGroup)?;
        assert!(private.len() <= group.exponent_bytes, "the private exponent is longer than the group's");
        DhKeyPair::new(group_id, group, private)
    }

    pub fn group(&self) -> DhGroup {
        self.group
    }

    /// g^x mod p as the Challenge carries it: big-endian, the group's value length.
    pub fn public(&self) -> &[u8] {
        &self.public
    }

    /// Z = y^x mod p from the host's value y, big-endian and left-padded to the group's
    /// value length (the session key hashes the leading zeros too). Refuses a y of the
    /// wrong length, and 0, 1, p-1 and anything not below p, which would give a Z of
    /// order 1 or 2 (or none at all).
    pub fn shared_secret(&self, peer: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let group = self.group.group().ok_or(CryptoError::NullGroup)?;
        if peer.len() != group.prime.len() {
            return Err(CryptoError::PeerValueLength { expected: group.prime.len(), actual: peer.len() });
        }
        if !is_above_one(peer) || !is_below_prime_minus_one(peer, group.prime) {
            return Err(CryptoError::PeerValueOutOfRange);
        }
        let parameters = group.parameters()?;
        let peer = BoxedUint::from_be_slice_truncated(peer, group.modulus_bits);
        let shared = Zeroizing::new(BoxedMontyForm::new(peer, parameters).pow_bounded_exp(&self.private, group.exponent_bits));
        let shared = Zeroizing::new(shared.retrieve());
        Ok(Zeroizing::new(shared.to_be_bytes().into_vec()))
    }
}

impl fmt::Debug for DhKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DhKeyPair").field("group", &self.group).field("public_len_bytes", &self.public.len()).finish_non_exhaustive()
    }
}

/// Whether the big-endian `value` is at least 2.
fn is_above_one(value: &[u8]) -> bool {
    match value.split_last() {
        Some((&last, head)) => last > 1 || head.iter().any(|&byte| byte != 0),
        None => false,
    }
}

/// Whether the big-endian `value`, as long as `prime`, is below p-1. Every RFC 7919
/// prime ends in FFh, so p-1 differs from p in its last byte only (it is FEh).
fn is_below_prime_minus_one(value: &[u8], prime: &[u8]) -> bool {
    let (Some((&last, head)), Some((_, prime_head))) = (value.split_last(), prime.split_last()) else {
        return false;
    };
    match head.cmp(prime_head) {
        Ordering::Less => true,
        Ordering::Equal => last < 0xFE,
        Ordering::Greater => false,
    }
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    use super::super::crypto::testing::*;
    use super::super::crypto::{response, session_key, HashFunction, Role};
    use super::*;

    #[test]
    fn group_ids_names_and_lengths() {
        let expected = [(0, "null", 0), (1, "ffdhe2048", 256), (2, "ffdhe3072", 384), (3, "ffdhe4096", 512), (4, "ffdhe6144", 768), (5, "ffdhe8192", 1024)];
        for (id, name, len) in expected {
            let group = DhGroup::from_id(id).unwrap();
            assert_eq!((group.id(), group.name(), group.value_len()), (id, name, len));
            assert_eq!(DhGroup::from_name(name), Some(group));
            assert_eq!(DhGroup::from_name(&format!("{name}\n")), Some(group));
        }
        assert_eq!(DhGroup::from_id(6), None);
        assert_eq!(DhGroup::from_name("ffdhe1024"), None);
        assert_eq!(DhGroup::from_name("NULL"), None);
        for group in DhGroup::ALL.into_iter().filter_map(DhGroup::group) {
            assert_eq!(group.prime.len() * 8, group.modulus_bits as usize);
            assert_eq!(group.exponent_bytes * 8, group.exponent_bits as usize);
        }
    }

    #[test]
    fn the_null_group_has_no_key_pair() {
        assert!(matches!(DhGroup::Null.generate(), Err(CryptoError::NullGroup)));
    }

    fn sha256_hex(bytes: &[u8]) -> String {
        hex(&Sha256::digest(bytes))
    }

    /// One key exchange and the responses over it, from fixed exponents.
    struct Exchange {
        controller: DhKeyPair,
        host: DhKeyPair,
        session_key: Zeroizing<Vec<u8>>,
        augmented_challenge: Zeroizing<Vec<u8>>,
        r1: Zeroizing<Vec<u8>>,
        r2: Zeroizing<Vec<u8>>,
    }

    /// x = 01h.., y = 65h.. (`exponent_len` bytes each), key K0 (bytes 00..1f, not
    /// transformed), C1 = 40h.., C2 = 80h...
    fn run_exchange(group: DhGroup, hash: HashFunction, exponent_len: usize) -> Exchange {
        let controller = DhKeyPair::from_private(group, &counting(0x01, exponent_len)).unwrap();
        let host = DhKeyPair::from_private(group, &counting(0x65, exponent_len)).unwrap();
        let shared = controller.shared_secret(host.public()).unwrap();
        assert_eq!(*shared, *host.shared_secret(controller.public()).unwrap());
        let session_key = session_key(hash, &shared);
        let key = counting(0, 32);
        let (c1, c2) = (counting(0x40, hash.len()), counting(0x80, hash.len()));
        let augmented_challenge = hash.hmac(&session_key, &[&c1]);
        let r1 = response(hash, &key, &c1, Some(&session_key), S1, TRANSACTION, 0, Role::Host, HOST_NQN, SUBSYSTEM_NQN);
        let r2 = response(hash, &key, &c2, Some(&session_key), S2, TRANSACTION, 0, Role::Controller, HOST_NQN, SUBSYSTEM_NQN);
        Exchange { controller, host, session_key, augmented_challenge, r1, r2 }
    }

    #[test]
    fn ffdhe2048_with_sha256_known_answers() {
        let exchange = run_exchange(DhGroup::Ffdhe2048, HashFunction::Sha256, 32);
        assert_eq!(hex(&exchange.controller.public()[..8]), "0eef0c0eae9c65a3");
        assert_eq!(sha256_hex(exchange.controller.public()), "53b37a098c5882b9f56495d787706d354ac8ebc273e680a7047c70228ce24ad3");
        assert_eq!(hex(&exchange.host.public()[..8]), "f4ba14b67a33152e");
        assert_eq!(sha256_hex(exchange.host.public()), "2e26cf10a1d144863e17441ad415e321e89ea4fe97435a9352dae7d7ae3fbf2f");
        assert_eq!(hex(&exchange.session_key), "a85e4e22b45f65ac6f13b6023d09a5013f8fcd0d68682577dffa25e6be8e82eb");
        assert_eq!(hex(&exchange.augmented_challenge), "5589e18231d4f8105368cd00450f42554699a75c3e936d0b018b1b9dd3882001");
        assert_eq!(hex(&exchange.r1), "3ab1b2bf7786ac6c7781bb75c2c2ccd5ff2cb70a7f170186d292a3062bf5750f");
        assert_eq!(hex(&exchange.r2), "c73eb3197435c0f000bdf85d53fe1a6895821fb6ee6030fdd0cc433b9f30a0f7");
    }

    /// Computed with the Python reference of the DH-HMAC-CHAP notes (section 5).
    #[test]
    fn ffdhe3072_with_sha384_known_answers() {
        let exchange = run_exchange(DhGroup::Ffdhe3072, HashFunction::Sha384, 32);
        assert_eq!(hex(&exchange.controller.public()[..8]), "b404191301538507");
        assert_eq!(sha256_hex(exchange.controller.public()), "5ce6aecb28dab50aef2dd058a154cd16b913aab8e2d8dc2f8dc7a0cd3079b6e5");
        assert_eq!(sha256_hex(exchange.host.public()), "4071842fedf58116a8122a33024fd7e1897c36984fedcb46d937155adb0963a4");
        assert_eq!(
            hex(&exchange.session_key),
            "5870a26b6a41fa7e004f64038c02a7c9c7ec16756578a53c125fb0f10d223d3a1c2c08ff0e12bf7fe6692036b889d889"
        );
        assert_eq!(
            hex(&exchange.augmented_challenge),
            "77b7732ed494aee187c0d5c616b03df94c7daf6a6222a0cae09a77564d90e2314ac60a531984d67f8964ed51ac39eea5"
        );
        assert_eq!(hex(&exchange.r1), "069d6b37b3fe586a320bef212e7f13a7f318c98d330f293ae0782ca215ff068dd123301485214d8f26c7c65478bff385");
        assert_eq!(hex(&exchange.r2), "d22bf61fa5990729dc1bec3b07b14c09e9248145a67c779f20e51bde3f847e3092ec9dd26a0705a43a90c2f813cf450d");
    }

    /// Computed with the Python reference; 512-bit exponents.
    #[test]
    fn ffdhe4096_and_ffdhe8192_with_sha512_known_answers() {
        let exchange = run_exchange(DhGroup::Ffdhe4096, HashFunction::Sha512, 64);
        assert_eq!(sha256_hex(exchange.controller.public()), "a53688d3a4d42b2c60ebff8551c83d059a0415eea23c365d1e190ebaff879f1c");
        assert_eq!(sha256_hex(exchange.host.public()), "703f20c57f6183396abac54a89340a87e777a271f1b9550a7da5712d01f8ae6d");
        assert_eq!(hex(&exchange.r1), "36bdaf98f30edf37551bbfadb340059bfe1cec63d4c6abda28bf92a7c5f043d8159c877cf9be5acd52e36846ceac5733620c79874c9cefd78c87b41a6dec5992");
        assert_eq!(hex(&exchange.r2), "4a6d0071a6a0662d9e50e9d75f0557f17e951db02a40404dd12fb13c4863246dee7f40ac18c1f66a1f78fbfd8e5bceeb5ef3641392f15d2e8b8a9fb37eb32862");
        let exchange = run_exchange(DhGroup::Ffdhe8192, HashFunction::Sha512, 64);
        assert_eq!(sha256_hex(exchange.controller.public()), "b2f1e92b44e0a45ee7b23938bfd9be352a84ab3878fa0afae756e3c4f6999e9e");
        assert_eq!(sha256_hex(exchange.host.public()), "5b1feda94f00b2a1f8bbf1681d604561884ee2d1bfd779b0cd2ce43ab4826b31");
        assert_eq!(hex(&exchange.r1), "016e53cfbb43f8be9fc34e590fa36cc5f773088f06fd6bd751ac6c76ada5936deee1c09353200f6ae79bf332e72c005e4807df0e29f35db21c3f66056cc74521");
        assert_eq!(hex(&exchange.r2), "ee5f9ba9f21be9794288de74674f5af4d2a3f6e456130c79b6b960b5f4543a91390e8faf5ec877c328619187e13ebf549fa4833e868835585ba0d2da31fe5fb5");
    }

    fn round_trip(group: DhGroup) {
        let controller = group.generate().unwrap();
        let host = group.generate().unwrap();
        assert_eq!(controller.group(), group);
        assert_eq!(controller.public().len(), group.value_len());
        assert_ne!(controller.public(), host.public());
        let shared = controller.shared_secret(host.public()).unwrap();
        assert_eq!(shared.len(), group.value_len());
        assert_eq!(*shared, *host.shared_secret(controller.public()).unwrap(), "{group:?}");
    }

    #[test]
    fn generated_pairs_agree_in_ffdhe2048_and_ffdhe3072() {
        round_trip(DhGroup::Ffdhe2048);
        round_trip(DhGroup::Ffdhe3072);
    }

    #[test]
    fn generated_pairs_agree_in_the_larger_groups() {
        round_trip(DhGroup::Ffdhe4096);
        round_trip(DhGroup::Ffdhe6144);
        round_trip(DhGroup::Ffdhe8192);
    }

    /// 2^8 and 2^(8*16) are far below p: their big-endian forms start with zeros, which
    /// both the public value and Z keep.
    #[test]
    fn values_are_left_padded_to_the_group_length() {
        let controller = DhKeyPair::from_private(DhGroup::Ffdhe2048, &[8]).unwrap();
        let mut expected = vec![0u8; 256];
        expected[254] = 1;
        assert_eq!(controller.public(), expected);
        let host = DhKeyPair::from_private(DhGroup::Ffdhe2048, &[16]).unwrap();
        let shared = controller.shared_secret(host.public()).unwrap();
        let mut expected = vec![0u8; 256];
        expected[255 - 16] = 1;
        assert_eq!(*shared, expected, "Z = 2^128");
    }

    #[test]
    fn peer_values_outside_the_group_are_refused() {
        let pair = DhKeyPair::from_private(DhGroup::Ffdhe2048, &counting(1, 32)).unwrap();
        let prime = ffdhe::FFDHE2048.to_vec();
        let with_last = |last: u8| {
            let mut value = prime.clone();
            value[255] = last;
            value
        };
        let small = |last: u8| {
            let mut value = vec![0u8; 256];
            value[255] = last;
            value
        };
        for refused in [small(0), small(1), with_last(0xFE), prime.clone(), vec![0xFF; 256]] {
            assert!(matches!(pair.shared_secret(&refused), Err(CryptoError::PeerValueOutOfRange)));
        }
        for accepted in [small(2), with_last(0xFD)] {
            assert!(pair.shared_secret(&accepted).is_ok());
        }
        for len in [0, 1, 255, 257, 384] {
            let refused = pair.shared_secret(&vec![2; len]);
            assert!(matches!(refused, Err(CryptoError::PeerValueLength { expected: 256, actual }) if actual == len));
        }
    }

    #[test]
    fn debug_shows_no_private_value() {
        let pair = DhKeyPair::from_private(DhGroup::Ffdhe2048, &[0x5A; 32]).unwrap();
        assert_eq!(format!("{pair:?}"), "DhKeyPair { group: Ffdhe2048, public_len_bytes: 256, .. }");
    }

    #[test]
    fn range_helpers() {
        assert!(!is_above_one(&[]));
        assert!(!is_above_one(&[0, 0, 1]));
        assert!(is_above_one(&[0, 0, 2]));
        assert!(is_above_one(&[1, 0, 0]));
        let prime = [0xC0, 0xFF];
        assert!(is_below_prime_minus_one(&[0xC0, 0xFD], &prime));
        assert!(!is_below_prime_minus_one(&[0xC0, 0xFE], &prime));
        assert!(is_below_prime_minus_one(&[0xBF, 0xFF], &prime));
        assert!(!is_below_prime_minus_one(&[0xC1, 0x00], &prime));
        assert!(!is_below_prime_minus_one(&[], &[]));
    }
}
