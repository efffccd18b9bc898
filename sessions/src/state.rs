//! Session state at rest: versioned protobuf (`proto/hush_session_state.proto`), optionally
//! sealed under a caller's [`StorageKey`].

use hush_crypto::kem::{KEM_SEED_LEN, KemKeyPair};
use hush_crypto::{
    CryptoRng, IdentityPublicKey, SealError, SecretBytes, StorageKey, X25519KeyPair, Zeroizing,
};
use prost::Message as _;

use crate::chain_key::ChainKey;
use crate::error::{DecodeError, StateError};
use crate::limits::{MAX_RECEIVER_CHAINS, MAX_SKIPPED_KEYS, MAX_STATE_LEN};
use crate::message::{kem_ciphertext, key32};
use crate::message_key::MessageKey;
use crate::pq_ratchet::{
    CHUNK_LEN, CIPHERTEXT_CHUNKS, Chunk, EpochSecret, KEY_CHUNKS, MAX_EPOCH_SECRETS, Phase,
    PqRatchet,
};
use crate::proto::state as ps;
use crate::receiver_chain::{ReceiverChain, ReceiverChains, SkippedKey};
use crate::root_key::RootKey;
use crate::session::{PendingStep, PrekeyParams, SenderChain, Session};
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

fn pq_to_proto(pq: &PqRatchet) -> ps::PqRatchet {
    let (kem_seed, ciphertext, chunks) = match &pq.phase {
        Phase::SendingKey { key_pair, received } => {
            (key_pair.seed().expose().to_vec(), Vec::new(), &received[..])
        }
        Phase::AwaitingKey { received } => (Vec::new(), Vec::new(), &received[..]),
        Phase::SendingCiphertext { ciphertext } => {
            (Vec::new(), ciphertext.as_bytes().to_vec(), &[][..])
        }
    };
    ps::PqRatchet {
        initiator: pq.initiator,
        epoch: pq.epoch,
        mixable: pq.mixable,
        next_chunk: u32::from(pq.next_chunk),
        kem_seed,
        ciphertext,
        chunks: chunks
            .iter()
            .map(|c| ps::PqChunk {
                index: u32::from(c.index),
                data: c.data.to_vec(),
            })
            .collect(),
        secrets: pq
            .secrets
            .iter()
            .map(|s| ps::PqSecret {
                epoch: s.epoch,
                secret: s.secret.expose().to_vec(),
            })
            .collect(),
    }
}

/// Restores a pending DH ratchet step. Its `pq_mixed` is at most `mixable` and has a secret
/// exactly when it is not 0.
fn pending_from_proto(p: &ps::PendingStep, mixable: u32) -> Result<PendingStep, DecodeError> {
    if p.pq_mixed > mixable || (p.pq_mixed == 0) != p.pq_secret.is_empty() {
        return Err(DecodeError::OutOfRange("pending_step.pq_mixed"));
    }
    Ok(PendingStep {
        secret: secret32(&p.secret, "pending_step.secret")?,
        their: key32(&p.their, "pending_step.their")?,
        pq_mixed: p.pq_mixed,
        pq_secret: (p.pq_mixed != 0)
            .then(|| secret32(&p.pq_secret, "pending_step.pq_secret"))
            .transpose()?,
    })
}

/// Restores the post-quantum ratchet, checking every bound a live session keeps (SPEC §7.8.6).
fn pq_from_proto(p: &ps::PqRatchet) -> Result<PqRatchet, DecodeError> {
    // Epoch e is entered once epoch e − 1's secret is held by both: mixable is always e − 1.
    if p.epoch == 0 || p.mixable != p.epoch - 1 {
        return Err(DecodeError::OutOfRange("pq_ratchet.epoch"));
    }
    let next_chunk =
        u8::try_from(p.next_chunk).map_err(|_| DecodeError::OutOfRange("pq_ratchet.next_chunk"))?;
    if p.secrets.len() > MAX_EPOCH_SECRETS {
        return Err(DecodeError::BadLength {
            field: "pq_ratchet.secrets",
            len: p.secrets.len(),
            expected: MAX_EPOCH_SECRETS,
        });
    }
    let mut secrets = Vec::with_capacity(p.secrets.len());
    for s in &p.secrets {
        if s.epoch == 0
            || s.epoch > p.epoch
            || secrets.iter().any(|o: &EpochSecret| o.epoch >= s.epoch)
        {
            return Err(DecodeError::OutOfRange("pq_ratchet.secrets.epoch"));
        }
        secrets.push(EpochSecret {
            epoch: s.epoch,
            secret: secret32(&s.secret, "pq_ratchet.secrets.secret")?,
        });
    }
    if p.mixable != 0 && !secrets.iter().any(|s| s.epoch == p.mixable) {
        return Err(DecodeError::OutOfRange("pq_ratchet.mixable"));
    }
    let mut chunks: Vec<Chunk> = Vec::with_capacity(p.chunks.len());
    for c in &p.chunks {
        let index = u8::try_from(c.index)
            .map_err(|_| DecodeError::OutOfRange("pq_ratchet.chunks.index"))?;
        if chunks.iter().any(|o| o.index == index) {
            return Err(DecodeError::OutOfRange("pq_ratchet.chunks.index"));
        }
        let data = c
            .data
            .as_slice()
            .try_into()
            .map_err(|_| DecodeError::BadLength {
                field: "pq_ratchet.chunks.data",
                len: c.data.len(),
                expected: CHUNK_LEN,
            })?;
        chunks.push(Chunk { index, data });
    }
    let sends_key = PqRatchet::sends_key(p.initiator, p.epoch);
    // This epoch's secret exists only once we have encapsulated.
    let current_secret = secrets.last().is_some_and(|s| s.epoch == p.epoch);
    let phase = match (sends_key, p.kem_seed.is_empty(), p.ciphertext.is_empty()) {
        (true, false, true) if chunks.len() < CIPHERTEXT_CHUNKS && !current_secret => {
            let seed = SecretBytes::from_slice(&p.kem_seed).ok_or(DecodeError::BadLength {
                field: "pq_ratchet.kem_seed",
                len: p.kem_seed.len(),
                expected: KEM_SEED_LEN,
            })?;
            Phase::SendingKey {
                key_pair: KemKeyPair::from_seed(seed),
                received: chunks,
            }
        }
        (false, true, true) if chunks.len() < KEY_CHUNKS && !current_secret => {
            Phase::AwaitingKey { received: chunks }
        }
        (false, true, false) if chunks.is_empty() && current_secret => Phase::SendingCiphertext {
            ciphertext: kem_ciphertext(&p.ciphertext, "pq_ratchet.ciphertext")?,
        },
        _ => return Err(DecodeError::OutOfRange("pq_ratchet")),
    };
    Ok(PqRatchet {
        initiator: p.initiator,
        epoch: p.epoch,
        phase,
        mixable: p.mixable,
        next_chunk,
        secrets,
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
                pq_mixed: self.sender.pq_mixed,
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
            pq_ratchet: self.pq.as_ref().map(pq_to_proto),
            pending_step: self.pending_step.as_ref().map(|p| ps::PendingStep {
                secret: p.secret.expose().to_vec(),
                their: p.their.to_bytes().to_vec(),
                pq_mixed: p.pq_mixed,
                pq_secret: p
                    .pq_secret
                    .as_ref()
                    .map(|s| s.expose().to_vec())
                    .unwrap_or_default(),
            }),
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
        let pq = state.pq_ratchet.as_ref().map(pq_from_proto).transpose()?;
        let mixable = pq.as_ref().map_or(0, |pq| pq.mixable);
        if pq
            .as_ref()
            .is_some_and(|pq| pq.initiator != state.accepted_prekey.is_none())
        {
            // The role is the one the prekey parameters show (§11.2).
            return Err(DecodeError::OutOfRange("pq_ratchet.initiator").into());
        }
        if sender.pq_mixed > pq.as_ref().map_or(0, |pq| pq.mixable) {
            // A chain mixes a secret both sides hold.
            return Err(DecodeError::OutOfRange("sender_chain.pq_mixed").into());
        }
        let pending_step = state
            .pending_step
            .as_ref()
            .map(|p| pending_from_proto(p, mixable))
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
                pq_mixed: sender.pq_mixed,
            },
            previous_counter: state.previous_counter,
            receivers,
            pending_prekey,
            accepted_prekey,
            post_quantum: state.post_quantum,
            pq,
            pending_step,
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;
    use crate::{KemPrekey, OneTimePrekey, PrekeyBundle, SessionMessage, SignedPrekey, Suite};

    /// A responder's session with its post-quantum state, and that state's protobuf.
    fn pq_state() -> (ps::SessionState, ps::PqRatchet) {
        let mut rng = StdRng::seed_from_u64(9);
        let a = hush_crypto::IdentityKeyPair::generate(&mut rng);
        let b = hush_crypto::IdentityKeyPair::generate(&mut rng);
        let spk = SignedPrekey::generate_for(Suite::PostQuantum, 1, &b, &mut rng);
        let opk = OneTimePrekey::generate(2, &mut rng);
        let kem = KemPrekey::generate_one_time(3, &b, &mut rng);
        let bundle = PrekeyBundle::new(b.public(), &spk, Some(&opk)).with_kem_prekey(&kem);
        let mut alice = Session::initiate(&a, &bundle, None, &mut rng).unwrap();
        let SessionMessage::Prekey(m) = alice.encrypt(b"x").unwrap() else {
            panic!()
        };
        let (bob, _) =
            Session::accept_with_kem(&b, &spk, Some(&opk), Some(&kem), &m, None, &mut rng).unwrap();
        let state = ps::SessionState::decode(&bob.to_bytes()[..]).unwrap();
        let pq = state.pq_ratchet.clone().unwrap();
        (state, pq)
    }

    fn restore(mut state: ps::SessionState, pq: ps::PqRatchet) -> Result<Session, StateError> {
        state.pq_ratchet = Some(pq);
        Session::from_bytes(&state.encode_to_vec())
    }

    fn chunk(index: u32) -> ps::PqChunk {
        ps::PqChunk {
            index,
            data: vec![7; CHUNK_LEN],
        }
    }

    fn secret(epoch: u32) -> ps::PqSecret {
        ps::PqSecret {
            epoch,
            secret: vec![1; 32],
        }
    }

    #[test]
    fn held_chunks_stop_below_what_completes_a_key() {
        let (state, pq) = pq_state();
        assert_eq!(pq.chunks.len(), 1, "Bob holds chunk 0 of Alice's key");
        let mut at = pq.clone();
        at.chunks = (0..KEY_CHUNKS as u32 - 1).map(chunk).collect();
        assert!(restore(state.clone(), at.clone()).is_ok());
        at.chunks.push(chunk(KEY_CHUNKS as u32 - 1));
        assert!(
            restore(state.clone(), at).is_err(),
            "a whole key's chunks held"
        );
        // Duplicate indices, an index over 255, a short chunk.
        for bad in [
            vec![chunk(3), chunk(3)],
            vec![chunk(256)],
            vec![ps::PqChunk {
                index: 1,
                data: vec![7; CHUNK_LEN - 1],
            }],
        ] {
            let mut p = pq.clone();
            p.chunks = bad;
            assert!(restore(state.clone(), p).is_err());
        }
    }

    #[test]
    fn at_most_two_secrets_in_order_and_mixable_among_them() {
        let (state, pq) = pq_state();
        let mut p = pq.clone();
        p.epoch = 5;
        p.mixable = 4;
        p.secrets = vec![secret(3), secret(4)];
        assert!(restore(state.clone(), p.clone()).is_ok());
        p.secrets = vec![secret(2), secret(3), secret(4)];
        assert!(restore(state.clone(), p.clone()).is_err(), "three secrets");
        p.secrets = vec![secret(4), secret(3)];
        assert!(restore(state.clone(), p.clone()).is_err(), "out of order");
        p.secrets = vec![secret(2), secret(3)];
        assert!(
            restore(state.clone(), p.clone()).is_err(),
            "mixable not held"
        );
        p.secrets = vec![secret(3), secret(6)];
        assert!(restore(state.clone(), p.clone()).is_err(), "a secret ahead");
        let mut e = pq.clone();
        e.epoch = 0;
        assert!(restore(state.clone(), e).is_err(), "epoch 0");
        let mut m = pq.clone();
        m.epoch = 3;
        m.mixable = 1;
        m.secrets = vec![secret(1)];
        assert!(
            restore(state.clone(), m.clone()).is_err(),
            "mixable not epoch - 1"
        );
        m.mixable = 2;
        m.secrets = vec![secret(2)];
        assert!(restore(state.clone(), m.clone()).is_ok());
        m.secrets = vec![secret(2), secret(3)];
        assert!(
            restore(state.clone(), m).is_err(),
            "this epoch's secret before encapsulating"
        );
        let mut r = pq.clone();
        r.initiator = true;
        assert!(restore(state.clone(), r).is_err(), "the wrong role");
        let mut n = pq.clone();
        n.next_chunk = 256;
        assert!(restore(state.clone(), n).is_err(), "next chunk 256");
    }

    #[test]
    fn a_pending_ratchet_step_restores_within_its_bounds() {
        // Alice after Bob's reply: a step pending, restored and completed by sending.
        let mut rng = StdRng::seed_from_u64(10);
        let a = hush_crypto::IdentityKeyPair::generate(&mut rng);
        let b = hush_crypto::IdentityKeyPair::generate(&mut rng);
        let spk = SignedPrekey::generate(1, &b, &mut rng);
        let bundle = PrekeyBundle::new(b.public(), &spk, None);
        let mut alice = Session::initiate(&a, &bundle, None, &mut rng).unwrap();
        let SessionMessage::Prekey(m) = alice.encrypt(b"x").unwrap() else {
            panic!()
        };
        let (mut bob, _) = Session::accept(&b, &spk, None, &m, None, &mut rng).unwrap();
        let reply = bob.encrypt(b"y").unwrap().to_bytes();
        alice.decrypt_bytes(&reply, &mut rng).unwrap();
        assert!(alice.pending_step.is_some());
        let state = ps::SessionState::decode(&alice.to_bytes()[..]).unwrap();
        let mut restored = Session::from_bytes(&state.encode_to_vec()).unwrap();
        let w = restored.encrypt(b"after restore").unwrap().to_bytes();
        assert_eq!(bob.decrypt_bytes(&w, &mut rng).unwrap(), b"after restore");
        // A classical session mixes nothing: pq_mixed 1, or a secret with pq_mixed 0, refused.
        for (mixed, secret) in [(1, vec![1; 32]), (0, vec![1; 32]), (1, vec![])] {
            let mut s = state.clone();
            if let Some(p) = s.pending_step.as_mut() {
                p.pq_mixed = mixed;
                p.pq_secret = secret;
            }
            assert!(Session::from_bytes(&s.encode_to_vec()).is_err());
        }
        let mut s = state;
        if let Some(p) = s.pending_step.as_mut() {
            p.their = vec![1; 31];
        }
        assert!(Session::from_bytes(&s.encode_to_vec()).is_err());
    }

    #[test]
    fn the_phase_must_fit_the_role() {
        let (state, pq) = pq_state();
        // Bob (responder) awaits the key in epoch 1: a key pair seed is not his to hold.
        let mut p = pq.clone();
        p.kem_seed = vec![1; 64];
        assert!(restore(state.clone(), p).is_err());
        // A ciphertext without this epoch's secret.
        let mut p = pq.clone();
        p.chunks.clear();
        p.ciphertext = vec![1; 1088];
        assert!(restore(state.clone(), p.clone()).is_err());
        p.secrets = vec![secret(1)];
        assert!(restore(state.clone(), p).is_ok());
        // A sending chain claiming a secret beyond what both hold.
        let mut s = state.clone();
        if let Some(c) = s.sender_chain.as_mut() {
            c.pq_mixed = 1;
        }
        assert!(restore(s, pq).is_err());
    }
}
