//! Sender keys: our own sending chain, and the chains we hold for other members.

use std::collections::VecDeque;

use hush_crypto::kdf::chain_step;
use hush_crypto::{CryptoRng, MessageKeys, SecretBytes, SigningKeyPair, SigningPublicKey};

use crate::error::GroupDecryptError;
use crate::wire::GROUP_KEYS_INFO;

/// How many of our own previous chain ids we avoid when choosing a new one.
pub(crate) const OWN_CHAIN_ID_HISTORY: usize = 16;

/// Our sending chain: a random id, the chain key at `iteration`, and the chain's signing key.
pub(crate) struct OwnChain {
    pub(crate) chain_id: u32,
    pub(crate) iteration: u32,
    pub(crate) chain_key: SecretBytes<32>,
    pub(crate) signing: SigningKeyPair,
    /// Messages sent on this chain (for the rotation policy).
    pub(crate) sent: u32,
    /// The caller's `now` when the chain was made.
    pub(crate) created_at: u64,
}

impl OwnChain {
    pub(crate) fn generate<R: CryptoRng + ?Sized>(rng: &mut R, avoid: &[u32], now: u64) -> Self {
        let chain_id = loop {
            let id = rng.next_u32();
            if id != 0 && !avoid.contains(&id) {
                break id;
            }
        };
        Self {
            chain_id,
            iteration: 0,
            chain_key: SecretBytes::random(rng),
            signing: SigningKeyPair::generate(rng),
            sent: 0,
            created_at: now,
        }
    }
}

/// `(key, nonce)` for a group message key.
pub(crate) fn message_keys(mk: &SecretBytes<32>) -> MessageKeys {
    MessageKeys::derive(mk, GROUP_KEYS_INFO)
}

/// A chain received from another member.
pub(crate) struct ReceiverChain {
    pub(crate) chain_id: u32,
    /// The iteration at which we received the chain: earlier messages are unreadable to us.
    pub(crate) first_iteration: u32,
    pub(crate) iteration: u32,
    pub(crate) chain_key: SecretBytes<32>,
    pub(crate) signing_key: SigningPublicKey,
}

/// A message key kept for a message that has not arrived yet.
pub(crate) struct Skipped {
    pub(crate) chain_id: u32,
    pub(crate) iteration: u32,
    pub(crate) key: SecretBytes<32>,
}

/// Everything we hold for one other member.
#[derive(Default)]
pub(crate) struct SenderChains {
    /// Oldest first; the last is the newest.
    pub(crate) chains: VecDeque<ReceiverChain>,
    /// Oldest first.
    pub(crate) skipped: VecDeque<Skipped>,
}

/// What a successful decryption commits.
pub(crate) enum Advance {
    UsedSkipped(usize),
    Chain {
        chain: usize,
        iteration: u32,
        chain_key: SecretBytes<32>,
        skipped: Vec<Skipped>,
    },
}

impl SenderChains {
    pub(crate) fn find(&self, chain_id: u32) -> Option<usize> {
        self.chains.iter().position(|c| c.chain_id == chain_id)
    }

    /// Derives, without changing anything, the message key for `iteration` on chain `index`.
    pub(crate) fn stage(
        &self,
        index: usize,
        iteration: u32,
        max_forward_jump: u32,
    ) -> Result<(SecretBytes<32>, Advance), GroupDecryptError> {
        let chain = &self.chains[index];
        if iteration < chain.first_iteration {
            return Err(GroupDecryptError::KeyUnavailable);
        }
        if iteration < chain.iteration {
            let pos = self
                .skipped
                .iter()
                .position(|s| s.chain_id == chain.chain_id && s.iteration == iteration)
                .ok_or(GroupDecryptError::Duplicate)?;
            return Ok((self.skipped[pos].key.duplicate(), Advance::UsedSkipped(pos)));
        }
        let gap = iteration - chain.iteration;
        if gap > max_forward_jump {
            return Err(GroupDecryptError::TooFarAhead {
                gap,
                max: max_forward_jump,
            });
        }
        let next_iteration = iteration
            .checked_add(1)
            .ok_or(GroupDecryptError::KeyUnavailable)?;
        let mut skipped = Vec::with_capacity(gap as usize);
        let mut ck = chain.chain_key.duplicate();
        for i in chain.iteration..iteration {
            let (mk, next) = chain_step(&ck);
            skipped.push(Skipped {
                chain_id: chain.chain_id,
                iteration: i,
                key: mk,
            });
            ck = next;
        }
        let (mk, next) = chain_step(&ck);
        Ok((
            mk,
            Advance::Chain {
                chain: index,
                iteration: next_iteration,
                chain_key: next,
                skipped,
            },
        ))
    }

    pub(crate) fn commit(&mut self, advance: Advance, max_skipped: u32) {
        match advance {
            Advance::UsedSkipped(pos) => {
                self.skipped.remove(pos);
            }
            Advance::Chain {
                chain,
                iteration,
                chain_key,
                skipped,
            } => {
                let c = &mut self.chains[chain];
                c.iteration = iteration;
                c.chain_key = chain_key;
                self.skipped.extend(skipped);
                while self.skipped.len() > max_skipped as usize {
                    self.skipped.pop_front();
                }
            }
        }
    }

    /// Adds a chain, dropping the oldest beyond `max_old_chains` old ones (and their keys).
    pub(crate) fn add(&mut self, chain: ReceiverChain, max_old_chains: u32) {
        self.chains.push_back(chain);
        while self.chains.len() > max_old_chains as usize + 1 {
            if let Some(dropped) = self.chains.pop_front() {
                self.skipped.retain(|s| s.chain_id != dropped.chain_id);
            }
        }
    }
}
