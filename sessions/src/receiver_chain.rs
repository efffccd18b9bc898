//! Receiving chains and the store of skipped message keys.

use std::collections::VecDeque;

use hush_crypto::X25519PublicKey;

use crate::chain_key::ChainKey;
use crate::limits::{MAX_RECEIVER_CHAINS, MAX_SKIPPED_KEYS};
use crate::message_key::MessageKey;

/// A chain that decrypts the peer's messages under one of its ratchet keys.
pub(crate) struct ReceiverChain {
    pub(crate) ratchet_key: X25519PublicKey,
    pub(crate) chain_key: ChainKey,
}

/// A message key kept for a message that has not arrived yet.
pub(crate) struct SkippedKey {
    pub(crate) ratchet_key: X25519PublicKey,
    pub(crate) key: MessageKey,
}

/// The receiving chains (oldest first) and skipped keys (oldest first) of a session.
#[derive(Default)]
pub(crate) struct ReceiverChains {
    pub(crate) chains: VecDeque<ReceiverChain>,
    pub(crate) skipped: VecDeque<SkippedKey>,
}

impl ReceiverChains {
    pub(crate) fn find_chain(&self, ratchet_key: &X25519PublicKey) -> Option<usize> {
        self.chains
            .iter()
            .position(|c| &c.ratchet_key == ratchet_key)
    }

    pub(crate) fn find_skipped(&self, ratchet_key: &X25519PublicKey, index: u32) -> Option<usize> {
        self.skipped
            .iter()
            .position(|s| s.key.index() == index && &s.ratchet_key == ratchet_key)
    }

    /// Adds skipped keys, evicting the oldest past [`MAX_SKIPPED_KEYS`].
    pub(crate) fn add_skipped(&mut self, ratchet_key: X25519PublicKey, keys: Vec<MessageKey>) {
        for key in keys {
            self.skipped.push_back(SkippedKey { ratchet_key, key });
        }
        while self.skipped.len() > MAX_SKIPPED_KEYS {
            self.skipped.pop_front();
        }
    }

    /// Adds a chain, dropping the oldest past [`MAX_RECEIVER_CHAINS`].
    pub(crate) fn add_chain(&mut self, chain: ReceiverChain) {
        self.chains.push_back(chain);
        while self.chains.len() > MAX_RECEIVER_CHAINS {
            self.chains.pop_front();
        }
    }
}
