//! Session state at rest: versioned protobuf (`proto/hush_session_state.proto`), optionally
//! sealed under a caller's [`StorageKey`].

use hush_crypto::{
    CryptoRng, IdentityPublicKey, SealError, SecretBytes, StorageKey, X25519KeyPair, Zeroizing,
};
use prost::Message as _;

use crate::chain_key::ChainKey;
use crate::error::{DecodeError, StateError};
use crate::limits::{MAX_RECEIVER_CHAINS, MAX_SKIPPED_KEYS, MAX_STATE_LEN};
use crate::message::{kem_ciphertext, key32};
use crate::message_key::MessageKey;
use crate::proto::state as ps;
use crate::receiver_chain::{ReceiverChain, ReceiverChains, SkippedKey};
use crate::root_key::RootKey;
use crate::session::{PrekeyParams, SenderChain, Session};
use crate::x3dh;

/// Version of the serialized session state.
pub const STATE_VERSION: u32 = 1;

/// The seal label for session state.
pub const SESSION_SEAL_LABEL: &[u8] = b"session";

fn secret32(bytes: &[u8], field: &'static str) -> Result<SecretBytes<32>, DecodeError> {
    SecretBytes::from_slice(bytes).ok_or(DecodeError::BadLength {
        field,
        len: bytes.len(),
        expected: 32,
    })
}

fn params_to_proto(p: &PrekeyParams) -> ps::PrekeyParams {
    ps::PrekeyParams {
        base_key: p.base_key.to_bytes().to_vec(),
        signed_prekey_id: p.signed_prekey_id,
        one_time_prekey_id: p.one_time_prekey_id,
        kem_prekey_id: p.kem.as_ref().map(|(id, _)| *id),
        kem_ciphertext: p
            .kem
            .as_ref()
            .map(|(_, ct)| ct.as_bytes().to_vec())
            .unwrap_or_default(),
    }
}

fn params_from_proto(p: &ps::PrekeyParams) -> Result<PrekeyParams, DecodeError> {
    let kem = match (p.kem_prekey_id, p.kem_ciphertext.is_empty()) {
        (None, true) => None,
        (Some(id), false) => Some((
            id,
            kem_ciphertext(&p.kem_ciphertext, "prekey_params.kem_ciphertext")?,
        )),
        (None, false) => return Err(DecodeError::MissingField("prekey_params.kem_prekey_id")),
        (Some(_), true) => return Err(DecodeError::MissingField("prekey_params.kem_ciphertext")),
    };
    Ok(PrekeyParams {
        base_key: key32(&p.base_key, "prekey_params.base_key")?,
        signed_prekey_id: p.signed_prekey_id,
        one_time_prekey_id: p.one_time_prekey_id,
        kem,
    })
}

impl Session {
    /// Serializes the whole session. The bytes hold secrets: seal them before storing, or use
    /// [`Session::seal`].
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let state = ps::SessionState {
            version: STATE_VERSION,
            local_identity: self.local_identity.to_bytes().to_vec(),
            remote_identity: self.remote_identity.to_bytes().to_vec(),
            root_key: self.root_key.expose().expose().to_vec(),
            sender_chain: Some(ps::SenderChain {
                ratchet_secret: self.sender.ratchet.secret_bytes().expose().to_vec(),
                chain_key: self.sender.chain_key.key().expose().to_vec(),
                index: self.sender.chain_key.index(),
            }),
            previous_counter: self.previous_counter,
            receiver_chains: self
                .receivers
                .chains
                .iter()
                .map(|c| ps::ReceiverChain {
                    ratchet_key: c.ratchet_key.to_bytes().to_vec(),
                    chain_key: c.chain_key.key().expose().to_vec(),
                    index: c.chain_key.index(),
                })
                .collect(),
            skipped_keys: self
                .receivers
                .skipped
                .iter()
                .map(|s| ps::SkippedKey {
                    ratchet_key: s.ratchet_key.to_bytes().to_vec(),
                    index: s.key.index(),
                    message_key: s.key.key().expose().to_vec(),
                })
                .collect(),
            pending_prekey: self.pending_prekey.as_ref().map(params_to_proto),
            accepted_prekey: self.accepted_prekey.as_ref().map(params_to_proto),
            post_quantum: self.post_quantum,
        };
        Zeroizing::new(state.encode_to_vec())
    }

    /// Restores a session serialized by [`Session::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, StateError> {
        if bytes.len() > MAX_STATE_LEN {
            return Err(DecodeError::TooLarge {
                len: bytes.len(),
                max: MAX_STATE_LEN,
            }
            .into());
        }
        let state = ps::SessionState::decode(bytes).map_err(|_| DecodeError::Protobuf)?;
        if state.version != STATE_VERSION {
            return Err(StateError::UnsupportedVersion(state.version));
        }
        if state.receiver_chains.len() > MAX_RECEIVER_CHAINS {
            return Err(DecodeError::BadLength {
                field: "receiver_chains",
                len: state.receiver_chains.len(),
                expected: MAX_RECEIVER_CHAINS,
            }
            .into());
        }
        if state.skipped_keys.len() > MAX_SKIPPED_KEYS {
            return Err(DecodeError::BadLength {
                field: "skipped_keys",
                len: state.skipped_keys.len(),
                expected: MAX_SKIPPED_KEYS,
            }
            .into());
        }
        let local_identity =
            IdentityPublicKey::from_slice(&state.local_identity).map_err(DecodeError::from)?;
        let remote_identity =
            IdentityPublicKey::from_slice(&state.remote_identity).map_err(DecodeError::from)?;
        let sender = state
            .sender_chain
            .as_ref()
            .ok_or(DecodeError::MissingField("sender_chain"))?;
        let mut receivers = ReceiverChains::default();
        for c in &state.receiver_chains {
            receivers.chains.push_back(ReceiverChain {
                ratchet_key: key32(&c.ratchet_key, "receiver_chains.ratchet_key")?,
                chain_key: ChainKey::new(
                    secret32(&c.chain_key, "receiver_chains.chain_key")?,
                    c.index,
                ),
            });
        }
        for s in &state.skipped_keys {
            receivers.skipped.push_back(SkippedKey {
                ratchet_key: key32(&s.ratchet_key, "skipped_keys.ratchet_key")?,
                key: MessageKey::new(
                    secret32(&s.message_key, "skipped_keys.message_key")?,
                    s.index,
                ),
            });
        }
        let pending_prekey = state
            .pending_prekey
            .as_ref()
            .map(params_from_proto)
            .transpose()?;
        let accepted_prekey = state
            .accepted_prekey
            .as_ref()
            .map(params_from_proto)
            .transpose()?;
        // The initiator's AD puts its own key first; the responder's puts the peer's first.
        let associated_data = if accepted_prekey.is_some() {
            x3dh::associated_data(&remote_identity, &local_identity)
        } else {
            x3dh::associated_data(&local_identity, &remote_identity)
        };
        Ok(Self {
            local_identity,
            remote_identity,
            associated_data,
            root_key: RootKey::new(secret32(&state.root_key, "root_key")?),
            sender: SenderChain {
                ratchet: X25519KeyPair::from_secret_bytes(&secret32(
                    &sender.ratchet_secret,
                    "sender_chain.ratchet_secret",
                )?),
                chain_key: ChainKey::new(
                    secret32(&sender.chain_key, "sender_chain.chain_key")?,
                    sender.index,
                ),
            },
            previous_counter: state.previous_counter,
            receivers,
            pending_prekey,
            accepted_prekey,
            post_quantum: state.post_quantum,
        })
    }

    /// Serializes and seals the session under `key` (label `"session"`).
    pub fn seal<R: CryptoRng + ?Sized>(
        &self,
        key: &StorageKey,
        rng: &mut R,
    ) -> Result<Vec<u8>, SealError> {
        key.seal(SESSION_SEAL_LABEL, &self.to_bytes(), rng)
    }

    /// Opens and restores a session sealed by [`Session::seal`].
    pub fn unseal(key: &StorageKey, blob: &[u8]) -> Result<Self, StateError> {
        let bytes = key.open(SESSION_SEAL_LABEL, blob)?;
        Self::from_bytes(&bytes)
    }
}
