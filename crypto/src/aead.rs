//! ChaCha20-Poly1305 (RFC 8439) and the derivation of an AEAD key and nonce from a message key.

use core::fmt;

use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, KeyInit, Nonce};

use crate::SecretBytes;
use crate::error::AeadError;
use crate::kdf::hkdf_sha256_zero_salt;

/// ChaCha20-Poly1305 key length.
pub const KEY_LEN: usize = 32;
/// ChaCha20-Poly1305 nonce length.
pub const NONCE_LEN: usize = 12;
/// Poly1305 tag length, appended to every ciphertext.
pub const TAG_LEN: usize = 16;

/// An AEAD key and nonce for exactly one message, derived from a message key.
pub struct MessageKeys {
    okm: SecretBytes<{ KEY_LEN + NONCE_LEN }>,
}

impl MessageKeys {
    /// `key ‖ nonce = HKDF-SHA256(salt = 32 zero bytes, ikm = message_key, info)`, 44 bytes:
    /// the key is bytes 0..32 and the nonce bytes 32..44.
    pub fn derive(message_key: &SecretBytes<32>, info: &[u8]) -> Self {
        Self::from_okm(hkdf_sha256_zero_salt(message_key.expose(), info))
    }

    /// Wraps 44 bytes of key material: key ‖ nonce.
    pub(crate) const fn from_okm(okm: SecretBytes<{ KEY_LEN + NONCE_LEN }>) -> Self {
        Self { okm }
    }

    /// Builds message keys from an explicit key and nonce.
    pub fn from_parts(key: &SecretBytes<KEY_LEN>, nonce: &[u8; NONCE_LEN]) -> Self {
        let mut okm = [0u8; KEY_LEN + NONCE_LEN];
        okm[..KEY_LEN].copy_from_slice(key.expose());
        okm[KEY_LEN..].copy_from_slice(nonce);
        let okm = SecretBytes::from_bytes(okm);
        Self { okm }
    }

    fn split(&self) -> (&[u8], &[u8]) {
        self.okm.expose().split_at(KEY_LEN)
    }

    /// The derived AEAD key.
    pub fn key(&self) -> &[u8] {
        self.split().0
    }

    /// The derived nonce.
    pub fn nonce(&self) -> &[u8] {
        self.split().1
    }

    fn cipher(&self) -> Result<(ChaCha20Poly1305, Nonce), AeadError> {
        let (k, n) = self.split();
        let key = Key::try_from(k).map_err(|_| AeadError)?;
        let nonce = Nonce::try_from(n).map_err(|_| AeadError)?;
        Ok((ChaCha20Poly1305::new(&key), nonce))
    }

    /// Encrypts `plaintext`, returning `ciphertext ‖ tag`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, AeadError> {
        let (cipher, nonce) = self.cipher()?;
        cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| AeadError)
    }

    /// Decrypts and authenticates `ciphertext ‖ tag`.
    pub fn open(&self, aad: &[u8], ciphertext: &[u8]) -> Result<Vec<u8>, AeadError> {
        let (cipher, nonce) = self.cipher()?;
        cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .map_err(|_| AeadError)
    }
}

impl fmt::Debug for MessageKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MessageKeys(redacted)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kdf::hkdf_sha256;

    #[test]
    fn rfc8439_section_2_8_2() {
        let key: [u8; 32] =
            hex::decode("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f")
                .unwrap()
                .try_into()
                .unwrap();
        let nonce: [u8; 12] = hex::decode("070000004041424344454647")
            .unwrap()
            .try_into()
            .unwrap();
        let aad = hex::decode("50515253c0c1c2c3c4c5c6c7").unwrap();
        let pt = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";
        let keys = MessageKeys::from_parts(&SecretBytes::from_bytes(key), &nonce);
        let ct = keys.seal(&aad, pt).unwrap();
        assert_eq!(
            hex::encode(&ct[ct.len() - 16..]),
            "1ae10b594f09e26a7e902ecbd0600691"
        );
        assert_eq!(keys.open(&aad, &ct).unwrap(), pt);
        let mut bad = ct.clone();
        bad[0] ^= 1;
        assert_eq!(keys.open(&aad, &bad), Err(AeadError));
        assert_eq!(keys.open(b"other", &ct), Err(AeadError));
        assert_eq!(keys.open(&aad, &ct[..15]), Err(AeadError));
    }

    #[test]
    fn derive_splits_44_bytes() {
        let mk = SecretBytes::from_bytes([3u8; 32]);
        let keys = MessageKeys::derive(&mk, b"label");
        let okm = hkdf_sha256::<44>(&[0u8; 32], &[3u8; 32], b"label");
        assert_eq!(keys.key(), &okm.expose()[..32]);
        assert_eq!(keys.nonce(), &okm.expose()[32..]);
        assert_eq!(format!("{keys:?}"), "MessageKeys(redacted)");
    }
}
