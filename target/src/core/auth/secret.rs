//! DH-HMAC-CHAP secrets in their text form `DHHC-1:hh:<base64>:` (NVMe Base 2.0,
//! section 8.13.5.7) and the key transformation that binds one to an NQN. Pure; never
//! writes key bytes into an error or a `Debug` string.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::primitives::HashFunction;

const PREFIX: &str = "DHHC-1:";
/// Appended to the NQN in the key transformation.
const TRANSFORM_SUFFIX: &[u8] = b"NVMe-over-Fabrics";

/// Why a secret's text is refused. No variant carries any part of the key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("a DH-HMAC-CHAP secret starts with \"DHHC-1:\"")]
    Prefix,
    #[error("the key transformation after \"DHHC-1:\" must be 00, 01, 02 or 03, then ':'")]
    TransformHash,
    #[error("the key is not padded standard base64")]
    Base64,
    #[error("the key decodes to {decoded_bytes} bytes, not 36, 52 or 68 (a 32, 48 or 64-byte key and its CRC-32)")]
    Length { decoded_bytes: usize },
    #[error("the key's CRC-32 does not match the key")]
    Crc,
}

/// A host's or a controller's DH-HMAC-CHAP secret: the key and the hash of its
/// transformation (`hh`; none for 00).
///
/// Equality takes the same time whatever the keys hold. The key length is not tied to
/// `hh`: nvmet accepts any of 32, 48 and 64 bytes with any transformation.
#[derive(Clone)]
pub struct Secret {
    transform_hash: Option<HashFunction>,
    key: Zeroizing<Vec<u8>>,
}

impl Secret {
    /// Parses `DHHC-1:hh:<base64 of key ‖ LE32 CRC-32>:` as nvmet and the Linux host
    /// read it: surrounding white space is ignored, `hh` is two decimal digits 00 to 03,
    /// the base64 is the standard alphabet with padding, and the key is 32, 48 or 64
    /// bytes. Like nvmet, it also takes the text without its final ':'.
    pub fn parse(text: &str) -> Result<Secret, SecretError> {
        let rest = text.trim().strip_prefix(PREFIX).ok_or(SecretError::Prefix)?;
        let (transform, rest) = rest.split_once(':').ok_or(SecretError::TransformHash)?;
        let transform_hash = match transform {
            "00" => None,
            "01" => Some(HashFunction::Sha256),
            "02" => Some(HashFunction::Sha384),
            "03" => Some(HashFunction::Sha512),
            _ => return Err(SecretError::TransformHash),
        };
        let encoded = rest.strip_suffix(':').unwrap_or(rest);
        // The decoder's own error names the offending byte, which may be key material.
        let decoded = Zeroizing::new(STANDARD.decode(encoded).map_err(|_| SecretError::Base64)?);
        let length_error = SecretError::Length { decoded_bytes: decoded.len() };
        let (key, crc) = decoded.split_last_chunk::<4>().ok_or(length_error.clone())?;
        if !is_key_length(key.len()) {
            return Err(length_error);
        }
        if crc32fast::hash(key) != u32::from_le_bytes(*crc) {
            return Err(SecretError::Crc);
        }
        Ok(Secret { transform_hash, key: Zeroizing::new(key.to_vec()) })
    }

    /// A secret from its parts; `key` must be 32, 48 or 64 bytes.
    pub fn new(transform_hash: Option<HashFunction>, key: &[u8]) -> Result<Secret, SecretError> {
        if !is_key_length(key.len()) {
            return Err(SecretError::Length { decoded_bytes: key.len().saturating_add(4) });
        }
        Ok(Secret { transform_hash, key: Zeroizing::new(key.to_vec()) })
    }

    /// The hash of the key transformation (`hh`), `None` for 00.
    pub fn transform_hash(&self) -> Option<HashFunction> {
        self.transform_hash
    }

    pub fn key_len_bytes(&self) -> usize {
        self.key.len()
    }

    /// The key the responses are computed with: with `hh` 00 the key itself, otherwise
    /// `HMAC_hh(key, nqn ‖ "NVMe-over-Fabrics")`. `nqn` is the host NQN for a host's
    /// secret and the subsystem NQN for a controller's.
    pub fn transform(&self, nqn: &str) -> Zeroizing<Vec<u8>> {
        match self.transform_hash {
            None => self.key.clone(),
            Some(hash) => hash.hmac(&self.key, &[nqn.as_bytes(), TRANSFORM_SUFFIX]),
        }
    }

    /// The canonical text `DHHC-1:hh:<base64>:`, as a configuration is saved. It holds
    /// the key: keep it out of logs.
    pub fn to_text(&self) -> String {
        let mut blob = Zeroizing::new(Vec::with_capacity(self.key.len().saturating_add(4)));
        blob.extend_from_slice(&self.key);
        blob.extend_from_slice(&crc32fast::hash(&self.key).to_le_bytes());
        format!("{PREFIX}{:02}:{}:", self.transform_id(), STANDARD.encode(&*blob))
    }

    /// `hh` as a number.
    fn transform_id(&self) -> u8 {
        self.transform_hash.map_or(0, HashFunction::id)
    }
}

fn is_key_length(len: usize) -> bool {
    matches!(len, 32 | 48 | 64)
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({PREFIX}{:02}:…)", self.transform_id())
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Secret) -> bool {
        let same_key: bool = self.key.ct_eq(&other.key).into();
        same_key & (self.transform_hash == other.transform_hash)
    }
}

impl Eq for Secret {}

#[cfg(test)]
mod tests {
    use super::super::crypto::testing::*;
    use super::super::crypto::{response, Role};
    use super::*;

    /// nvme-cli 2.3 `gen-dhchap-key -s 000102…1f -m 0`.
    const K0: &str = "DHHC-1:00:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh+KfiaR:";
    /// `gen-dhchap-key` with secret bytes 0..n-1, `-m 1`, `-m 2`, `-m 3` and `-n HOST_NQN`:
    /// each prints the transformed secret, `HMAC(secret, HOST_NQN ‖ "NVMe-over-Fabrics")`.
    const K1: &str = "DHHC-1:01:bHuByyp0b3RFSx1xQPMVO1HKmUWfzveoahfydpW4fNgSLMVm:";
    const K2: &str = "DHHC-1:02:yRbznXvUOKyUzpjxLyIgLGvEOxsb9/CBo2/XbRG0sXMHJv918yV2tXSc+gbRp7T1eXmwtA==:";
    const K3: &str =
        "DHHC-1:03:XaedOIjF3axQewl4QMTIr4xwmePzL78hYgnSQQP1S88iKE5wNLtXmomXR19QrsC/88ytGEVjd56B9IxAUHG5cMGgMCQ=:";

    #[test]
    fn nvme_cli_secrets_parse_and_print_back() {
        for (text, hash, len) in [(K0, None, 32), (K1, Some(HashFunction::Sha256), 32), (K2, Some(HashFunction::Sha384), 48), (K3, Some(HashFunction::Sha512), 64)] {
            let secret = Secret::parse(text).unwrap();
            assert_eq!((secret.transform_hash(), secret.key_len_bytes()), (hash, len), "{text}");
            assert_eq!(secret.to_text(), text);
        }
        assert_eq!(hex(&Secret::parse(K0).unwrap().key), hex(&counting(0, 32)));
    }

    #[test]
    fn crc_is_little_endian_crc32_of_the_key() {
        assert_eq!(crc32fast::hash(&counting(0, 32)), 0x9126_7e8a);
        let secret = Secret::new(None, &counting(0, 32)).unwrap();
        assert_eq!(secret.to_text(), K0);
    }

    /// nvme-cli printed the transformed secret, so transforming the plain secret with
    /// the same hash and NQN must give the key it printed.
    #[test]
    fn transform_matches_nvme_cli() {
        for (text, hash) in [(K1, HashFunction::Sha256), (K2, HashFunction::Sha384), (K3, HashFunction::Sha512)] {
            let printed = Secret::parse(text).unwrap();
            let plain = Secret::new(Some(hash), &counting(0, hash.len())).unwrap();
            assert_eq!(hex(&plain.transform(HOST_NQN)), hex(&printed.key), "{text}");
        }
        assert_eq!(hex(&Secret::parse(K1).unwrap().key), "6c7b81cb2a746f74454b1d7140f3153b51ca99459fcef7a86a17f27695b87cd8");
    }

    #[test]
    fn transform_of_the_parsed_secrets() {
        let k0 = Secret::parse(K0).unwrap();
        assert_eq!(hex(&k0.transform(HOST_NQN)), hex(&counting(0, 32)), "hh 00 uses the key as it is");
        let cases = [
            (K1, "345f94d96e065bc0761d5395af3fbd910cb9a2eae2cfbd030fac4e06fa58498b", "3230c2d7429b5b55c1b2c1b867877d92ec7e9b2db9373a10982a8ce4bd854da1"),
            (
                K2,
                "2ce24c715599a85f724fea2d5938a4d5efeb059d9073907f063d4f909aacc1953179d94727fff6dbe146896b18ec0b72",
                "5fee78edad52c3a6e7c5de1666fcb3a1c9c51d525928764cc4136ed985f613839b5102d5d7a10b0d53cee1f598147173",
            ),
            (
                K3,
                "9071ebf346e94481337586be7fb9d95ad40a0fa16cfb40cc4d9db6a3760bcee69a8c033a7bd57bca448fdac732e833865a09c03185eec1a98df79ea81d23377b",
                "0965c9851d7f8f3b4f6e07d28d0a53c378164b9e05c6fff0849b88c5febfa911429c23916833a4da36347aab8254caf38a36e29a3975e54bef2ba5c6fcb181ef",
            ),
        ];
        for (text, host, subsystem) in cases {
            let secret = Secret::parse(text).unwrap();
            assert_eq!(hex(&secret.transform(HOST_NQN)), host, "{text}");
            assert_eq!(hex(&secret.transform(SUBSYSTEM_NQN)), subsystem, "{text}");
        }
    }

    /// R1 with K1 transformed with the host NQN, R2 with K1 transformed with the
    /// subsystem NQN, NULL group.
    #[test]
    fn null_group_responses_with_a_transformed_key() {
        let secret = Secret::parse(K1).unwrap();
        let cases = [
            (HashFunction::Sha256, "bc4923c92a35dcaf7a11c9b4f90d7e0d96efe30de3516cb281e34950f78ad7c0", "0a7a85bb250ddd8149b036dbd8568ef3a74612a7eeb3908f3c1d3007e23f7ceb"),
            (
                HashFunction::Sha384,
                "3901a33fdc1534d66b805e684b08f0801338dc2ff9a8d234a6472611ba9942ea57419a5f76b2dcee6ae92ff6383e6c0b",
                "e56314c76189b5bc55cbbb92a08e2f4e51049b95e6720bdee1616dad95f4daf35908f3e122d348994d65e6c0af690aee",
            ),
            (
                HashFunction::Sha512,
                "3ee73625afefefce6160df26fae7b4552c352a31ad81e323ad82e4d9b21cafafed1d1aacd2496de10446c229146051b2f1ab0d465de993d157a362c967b7e755",
                "bdb37c13ca86d2e3e4bf6819e39fab502ac5f364b08a0227c2d011d7f0341204720e88cd255966dd16c460b87b38d2a3448a3de7b4491e33ac873ae04bd9f692",
            ),
        ];
        for (hash, r1, r2) in cases {
            let host_key = secret.transform(HOST_NQN);
            let controller_key = secret.transform(SUBSYSTEM_NQN);
            let c1 = counting(0x40, hash.len());
            let c2 = counting(0x80, hash.len());
            let computed_r1 = response(hash, &host_key, &c1, None, S1, TRANSACTION, 0, Role::Host, HOST_NQN, SUBSYSTEM_NQN);
            let computed_r2 = response(hash, &controller_key, &c2, None, S2, TRANSACTION, 0, Role::Controller, HOST_NQN, SUBSYSTEM_NQN);
            assert_eq!((hex(&computed_r1), hex(&computed_r2)), (r1.to_owned(), r2.to_owned()), "{hash:?}");
        }
    }

    #[test]
    fn white_space_and_a_missing_final_colon_are_accepted() {
        let k0 = Secret::parse(K0).unwrap();
        assert_eq!(Secret::parse(&format!("  {K0}\n")).unwrap(), k0);
        assert_eq!(Secret::parse(K0.strip_suffix(':').unwrap()).unwrap(), k0);
    }

    #[test]
    fn bad_secrets_say_what_is_wrong() {
        let body = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh+KfiaR";
        let short = STANDARD.encode([0u8; 35]);
        let long = STANDARD.encode([0u8; 72]);
        let cases = [
            (String::new(), SecretError::Prefix),
            (format!("DHHC-2:00:{body}:"), SecretError::Prefix),
            (format!("dhhc-1:00:{body}:"), SecretError::Prefix),
            (format!("DHHC-1:04:{body}:"), SecretError::TransformHash),
            (format!("DHHC-1:0:{body}:"), SecretError::TransformHash),
            (format!("DHHC-1:001:{body}:"), SecretError::TransformHash),
            (format!("DHHC-1:{body}"), SecretError::TransformHash),
            ("DHHC-1:00".to_owned(), SecretError::TransformHash),
            ("DHHC-1:00:!!!!:".to_owned(), SecretError::Base64),
            (format!("DHHC-1:00:{body}::"), SecretError::Base64),
            (format!("DHHC-1:00:{} :", body), SecretError::Base64),
            ("DHHC-1:02:yRbznXvUOKyUzpjxLyIgLGvEOxsb9/CBo2/XbRG0sXMHJv918yV2tXSc+gbRp7T1eXmwtA:".to_owned(), SecretError::Base64),
            ("DHHC-1:00::".to_owned(), SecretError::Length { decoded_bytes: 0 }),
            (format!("DHHC-1:00:{short}:"), SecretError::Length { decoded_bytes: 35 }),
            (format!("DHHC-1:00:{long}:"), SecretError::Length { decoded_bytes: 72 }),
            ("DHHC-1:00:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh+KfiaS:".to_owned(), SecretError::Crc),
            ("DHHC-1:00:AQECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh+KfiaR:".to_owned(), SecretError::Crc),
        ];
        for (text, error) in cases {
            let refused = Secret::parse(&text).unwrap_err();
            assert_eq!(refused, error, "{text:?}");
            let message = refused.to_string();
            assert!(!message.contains("AAEC") && !message.contains("yRbz"), "{message}");
        }
        assert_eq!(Secret::new(None, &[0; 33]).unwrap_err(), SecretError::Length { decoded_bytes: 37 });
    }

    #[test]
    fn debug_hides_the_key() {
        let shown = format!("{:?}", Secret::parse(K1).unwrap());
        assert_eq!(shown, "Secret(DHHC-1:01:…)");
    }

    #[test]
    fn equality_needs_the_same_key_and_transformation() {
        let k0 = Secret::parse(K0).unwrap();
        assert_eq!(k0, Secret::new(None, &counting(0, 32)).unwrap());
        assert_ne!(k0, Secret::new(Some(HashFunction::Sha256), &counting(0, 32)).unwrap());
        assert_ne!(k0, Secret::new(None, &counting(1, 32)).unwrap());
        assert_ne!(k0, Secret::new(None, &counting(0, 48)).unwrap());
    }
}
