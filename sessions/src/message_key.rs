//! Message keys: one per message, expanded into a ChaCha20-Poly1305 key and nonce.

use hush_crypto::{AeadError, MessageKeys, SecretBytes};

use crate::error::DecryptError;

/// HKDF info that expands a message key into an AEAD key and nonce.
pub const MESSAGE_INFO: &[u8] = hush_crypto::labels::MESSAGE_INFO;

/// A message key MK and the message number it belongs to.
pub(crate) struct MessageKey {
    key: SecretBytes<32>,
    index: u32,
}

impl MessageKey {
    pub(crate) const fn new(key: SecretBytes<32>, index: u32) -> Self {
        Self { key, index }
    }

    pub(crate) const fn index(&self) -> u32 {
        self.index
    }

    pub(crate) const fn key(&self) -> &SecretBytes<32> {
        &self.key
    }

    fn aead(&self) -> MessageKeys {
        MessageKeys::derive(&self.key, MESSAGE_INFO)
    }

    pub(crate) fn encrypt(&self, ad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, AeadError> {
        self.aead().seal(ad, plaintext)
    }

    pub(crate) fn decrypt(&self, ad: &[u8], ciphertext: &[u8]) -> Result<Vec<u8>, DecryptError> {
        self.aead()
            .open(ad, ciphertext)
            .map_err(|_| DecryptError::Authentication)
    }
}
