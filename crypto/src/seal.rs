//! Sealing protocol state at rest under a caller's 32-byte storage key.
//!
//! ```text
//! blob      = 0x01 ‖ salt (32 random bytes) ‖ ChaCha20-Poly1305(key, nonce, aad, plaintext) ‖ tag
//! key‖nonce = HKDF-SHA256(salt, ikm = storage key, info = "hush seal v1" ‖ label), 44 bytes
//! aad       = 0x01 ‖ label
//! ```
//!
//! The label names what is sealed (for example `session`), so a blob of one kind cannot be
//! opened as another. A fresh salt per seal gives a fresh key and nonce, so random nonces
//! never collide under one storage key.

use core::fmt;

use rand_core::CryptoRng;
use zeroize::Zeroizing;

use crate::SecretBytes;
use crate::aead::{MessageKeys, TAG_LEN};
use crate::error::SealError;
use crate::kdf::hkdf_sha256;

/// The format byte that starts every sealed blob.
pub const SEAL_VERSION: u8 = 0x01;
/// Length of the random salt in a sealed blob.
pub const SEAL_SALT_LEN: usize = 32;
/// Bytes a sealed blob adds to its plaintext: version, salt and tag.
pub const SEAL_OVERHEAD: usize = 1 + SEAL_SALT_LEN + TAG_LEN;
/// The HKDF info prefix for sealing keys.
pub const SEAL_INFO: &[u8] = crate::labels::SEAL_INFO;

/// A caller-supplied 32-byte key that seals protocol state at rest.
pub struct StorageKey(SecretBytes<32>);

impl StorageKey {
    /// Wraps 32 key bytes supplied by the application (for example from the OS keystore).
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(SecretBytes::from_bytes(bytes))
    }

    /// Generates a random storage key.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        Self(SecretBytes::random(rng))
    }

    fn keys(&self, salt: &[u8], label: &[u8]) -> MessageKeys {
        let mut info = Vec::with_capacity(SEAL_INFO.len() + label.len());
        info.extend_from_slice(SEAL_INFO);
        info.extend_from_slice(label);
        MessageKeys::from_okm(hkdf_sha256(salt, self.0.expose(), &info))
    }

    /// Seals `plaintext` under this key, bound to `label`.
    pub fn seal<R: CryptoRng + ?Sized>(
        &self,
        label: &[u8],
        plaintext: &[u8],
        rng: &mut R,
    ) -> Result<Vec<u8>, SealError> {
        let mut salt = [0u8; SEAL_SALT_LEN];
        rng.fill_bytes(&mut salt);
        self.seal_with_salt(label, plaintext, &salt)
    }

    /// Seals with an explicit salt. Only for deterministic test vectors: never reuse a salt.
    pub fn seal_with_salt(
        &self,
        label: &[u8],
        plaintext: &[u8],
        salt: &[u8; SEAL_SALT_LEN],
    ) -> Result<Vec<u8>, SealError> {
        let ct = self
            .keys(salt, label)
            .seal(&aad(label), plaintext)
            .map_err(|_| SealError::TooLarge)?;
        let mut out = Vec::with_capacity(SEAL_OVERHEAD + plaintext.len());
        out.push(SEAL_VERSION);
        out.extend_from_slice(salt);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Opens a blob made by [`StorageKey::seal`] with the same `label`.
    pub fn open(&self, label: &[u8], blob: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let (&version, rest) = blob.split_first().ok_or(SealError::Malformed)?;
        if version != SEAL_VERSION {
            return Err(SealError::UnsupportedVersion(version));
        }
        if rest.len() < SEAL_SALT_LEN + TAG_LEN {
            return Err(SealError::Malformed);
        }
        let (salt, ct) = rest.split_at(SEAL_SALT_LEN);
        self.keys(salt, label)
            .open(&aad(label), ct)
            .map(Zeroizing::new)
            .map_err(|_| SealError::Decrypt)
    }
}

fn aad(label: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(1 + label.len());
    aad.push(SEAL_VERSION);
    aad.extend_from_slice(label);
    aad
}

impl fmt::Debug for StorageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StorageKey(redacted)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn round_trip_and_failures() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let key = StorageKey::generate(&mut rng);
        let blob = key.seal(b"session", b"state bytes", &mut rng).unwrap();
        assert_eq!(blob.len(), SEAL_OVERHEAD + 11);
        assert_eq!(&**key.open(b"session", &blob).unwrap(), b"state bytes");
        assert_eq!(key.open(b"group", &blob).unwrap_err(), SealError::Decrypt);
        let other = StorageKey::generate(&mut rng);
        assert_eq!(
            other.open(b"session", &blob).unwrap_err(),
            SealError::Decrypt
        );
        let mut bad = blob.clone();
        bad[0] = 2;
        assert_eq!(
            key.open(b"session", &bad).unwrap_err(),
            SealError::UnsupportedVersion(2)
        );
        for i in 1..blob.len() {
            let mut bad = blob.clone();
            bad[i] ^= 0x80;
            assert_eq!(
                key.open(b"session", &bad).unwrap_err(),
                SealError::Decrypt,
                "byte {i}"
            );
        }
        assert_eq!(
            key.open(b"session", &blob[..SEAL_OVERHEAD - 1])
                .unwrap_err(),
            SealError::Malformed
        );
        assert_eq!(key.open(b"session", &[]).unwrap_err(), SealError::Malformed);
        // The shortest well-formed blob (empty plaintext) opens.
        let empty = key.seal(b"x", b"", &mut rng).unwrap();
        assert_eq!(empty.len(), SEAL_OVERHEAD);
        assert!(key.open(b"x", &empty).unwrap().is_empty());
        assert_eq!(format!("{key:?}"), "StorageKey(redacted)");
    }

    #[test]
    fn fresh_salt_each_time() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(6);
        let key = StorageKey::generate(&mut rng);
        assert_ne!(
            key.seal(b"l", b"same", &mut rng).unwrap(),
            key.seal(b"l", b"same", &mut rng).unwrap()
        );
    }
}
