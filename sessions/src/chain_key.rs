//! Chain keys and the symmetric-key ratchet (Signal's KDF_CK).

use hush_crypto::SecretBytes;
use hush_crypto::kdf::chain_step;

use crate::error::DecryptError;
use crate::limits::MAX_MESSAGE_GAP;
use crate::message_key::MessageKey;

/// A chain key CK with the number of the next message it will produce.
pub(crate) struct ChainKey {
    key: SecretBytes<32>,
    index: u32,
}

impl ChainKey {
    pub(crate) const fn new(key: SecretBytes<32>, index: u32) -> Self {
        Self { key, index }
    }

    pub(crate) const fn index(&self) -> u32 {
        self.index
    }

    pub(crate) const fn key(&self) -> &SecretBytes<32> {
        &self.key
    }

    /// `MK = HMAC(CK, 0x01)`, `CK' = HMAC(CK, 0x02)`. `None` once the index would overflow.
    pub(crate) fn step(&self) -> Option<(MessageKey, ChainKey)> {
        let next = self.index.checked_add(1)?;
        let (mk, ck) = chain_step(&self.key);
        Some((MessageKey::new(mk, self.index), ChainKey::new(ck, next)))
    }

    /// Derives, without changing `self`, the keys of messages `index..target` (to be stored as
    /// skipped) and the chain positioned at `target`.
    pub(crate) fn skip_to(&self, target: u32) -> Result<(Vec<MessageKey>, ChainKey), DecryptError> {
        let gap = target.saturating_sub(self.index);
        if gap > MAX_MESSAGE_GAP {
            return Err(DecryptError::TooFarAhead {
                gap,
                max: MAX_MESSAGE_GAP,
            });
        }
        let mut skipped = Vec::with_capacity(gap as usize);
        let mut chain = self.duplicate();
        while chain.index < target {
            let (mk, next) = chain.step().ok_or(DecryptError::Authentication)?;
            skipped.push(mk);
            chain = next;
        }
        Ok((skipped, chain))
    }

    pub(crate) fn duplicate(&self) -> Self {
        Self {
            key: self.key.duplicate(),
            index: self.index,
        }
    }
}
