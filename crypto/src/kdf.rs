//! HKDF-SHA256 and HMAC-SHA256, and the chain-key step shared by sessions and groups.

use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::SecretBytes;
use crate::error::KdfError;

type HmacSha256 = Hmac<Sha256>;

/// Length of an HMAC-SHA256 output.
pub const HMAC_LEN: usize = 32;

/// The largest HKDF-SHA256 output, 255 × 32 bytes (RFC 5869).
pub const HKDF_MAX_OUTPUT: usize = 255 * 32;

/// The HMAC input that derives a message key from a chain key.
pub const MESSAGE_KEY_SEED: u8 = 0x01;
/// The HMAC input that derives the next chain key from a chain key.
pub const CHAIN_KEY_SEED: u8 = 0x02;

/// HKDF-SHA256 (RFC 5869) into a caller-sized buffer.
///
/// An empty `salt` is the RFC's "not provided" and equals 32 zero bytes.
pub fn hkdf_sha256_into(
    salt: &[u8],
    ikm: &[u8],
    info: &[u8],
    okm: &mut [u8],
) -> Result<(), KdfError> {
    Hkdf::<Sha256>::new(Some(salt), ikm)
        .expand(info, okm)
        .map_err(|_| KdfError::OutputTooLong {
            len: okm.len(),
            max: HKDF_MAX_OUTPUT,
        })
}

/// HKDF-SHA256 with an output of `N` bytes, checked at compile time to be at most 8160.
pub fn hkdf_sha256<const N: usize>(salt: &[u8], ikm: &[u8], info: &[u8]) -> SecretBytes<N> {
    const { assert!(N <= HKDF_MAX_OUTPUT) };
    let mut okm = [0u8; N];
    let expanded = hkdf_sha256_into(salt, ikm, info, &mut okm);
    debug_assert!(expanded.is_ok(), "N is bounded at compile time");
    let out = SecretBytes::from_bytes(okm);
    zeroize::Zeroize::zeroize(&mut okm);
    out
}

/// HKDF-SHA256 with the salt of 32 zero bytes, as [`hkdf_sha256`] with that salt gives,
/// reusing the extract step's key schedule (the same for every call).
pub fn hkdf_sha256_zero_salt<const N: usize>(ikm: &[u8], info: &[u8]) -> SecretBytes<N> {
    const { assert!(N <= HKDF_MAX_OUTPUT) };
    static ZERO_SALT: std::sync::OnceLock<HmacSha256> = std::sync::OnceLock::new();
    let mut extract = ZERO_SALT.get_or_init(|| keyed(&[0u8; 32])).clone();
    extract.update(ikm);
    let mut prk: [u8; 32] = extract.finalize().into_bytes().into();
    let mut okm = [0u8; N];
    let expanded = Hkdf::<Sha256>::from_prk(&prk).map(|hk| hk.expand(info, &mut okm));
    debug_assert!(matches!(expanded, Ok(Ok(()))), "a 32-byte PRK, N bounded");
    let out = SecretBytes::from_bytes(okm);
    zeroize::Zeroize::zeroize(&mut okm);
    zeroize::Zeroize::zeroize(&mut prk);
    out
}

/// HMAC-SHA256 of `message` under `key`.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> SecretBytes<HMAC_LEN> {
    let mut mac = keyed(key);
    mac.update(message);
    SecretBytes::from_bytes(mac.finalize().into_bytes().into())
}

/// Verifies a full 32-byte HMAC-SHA256 tag in constant time.
pub fn hmac_sha256_verify(key: &[u8], message: &[u8], tag: &[u8]) -> bool {
    let mut mac = keyed(key);
    mac.update(message);
    mac.verify_slice(tag).is_ok()
}

fn keyed(key: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    match HmacSha256::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => HmacSha256::new(&Default::default()),
    }
}

/// The symmetric-key ratchet step (Signal's KDF_CK):
/// `MK = HMAC-SHA256(CK, 0x01)`, `CK' = HMAC-SHA256(CK, 0x02)`.
///
/// Returns `(message_key, next_chain_key)`. The HMAC key schedule is computed once for both.
pub fn chain_step(chain_key: &SecretBytes<32>) -> (SecretBytes<32>, SecretBytes<32>) {
    let base = keyed(chain_key.expose());
    let mut mk = base.clone();
    mk.update(&[MESSAGE_KEY_SEED]);
    let mut ck = base;
    ck.update(&[CHAIN_KEY_SEED]);
    (
        SecretBytes::from_bytes(mk.finalize().into_bytes().into()),
        SecretBytes::from_bytes(ck.finalize().into_bytes().into()),
    )
}

#[cfg(test)]
mod tests {

    #[test]
    fn zero_salt_hkdf_is_hkdf_with_a_zero_salt() {
        for len in [0usize, 1, 32, 33, 100] {
            let ikm: Vec<u8> = (0..len as u8).collect();
            for info in [&b""[..], b"hush message v1", &[7u8; 80]] {
                assert_eq!(
                    hkdf_sha256_zero_salt::<44>(&ikm, info).expose(),
                    hkdf_sha256::<44>(&[0u8; 32], &ikm, info).expose()
                );
                assert_eq!(
                    hkdf_sha256_zero_salt::<64>(&ikm, info).expose(),
                    hkdf_sha256::<64>(&[], &ikm, info).expose()
                );
            }
        }
    }

    use super::*;

    #[test]
    fn rfc5869_case_1() {
        let ikm = [0x0b; 22];
        let salt = hex::decode("000102030405060708090a0b0c").unwrap();
        let info = hex::decode("f0f1f2f3f4f5f6f7f8f9").unwrap();
        let okm = hkdf_sha256::<42>(&salt, &ikm, &info);
        assert_eq!(
            hex::encode(okm.expose()),
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
        );
    }

    #[test]
    fn too_long_output_is_an_error() {
        let mut big = vec![0u8; HKDF_MAX_OUTPUT + 1];
        assert_eq!(
            hkdf_sha256_into(b"", b"", b"", &mut big),
            Err(KdfError::OutputTooLong {
                len: HKDF_MAX_OUTPUT + 1,
                max: HKDF_MAX_OUTPUT
            })
        );
        let mut max = vec![0u8; HKDF_MAX_OUTPUT];
        assert!(hkdf_sha256_into(b"", b"", b"", &mut max).is_ok());
    }

    #[test]
    fn chain_step_matches_two_hmacs() {
        let ck = SecretBytes::from_bytes([9u8; 32]);
        let (mk, next) = chain_step(&ck);
        assert!(mk == hmac_sha256(&[9u8; 32], &[1]));
        assert!(next == hmac_sha256(&[9u8; 32], &[2]));
        assert!(mk != next);
    }

    #[test]
    fn hmac_verify() {
        let tag = hmac_sha256(b"k", b"m");
        assert!(hmac_sha256_verify(b"k", b"m", tag.expose()));
        assert!(!hmac_sha256_verify(b"k", b"n", tag.expose()));
        assert!(!hmac_sha256_verify(b"k", b"m", &tag.expose()[..31]));
    }
}
