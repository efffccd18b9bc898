//! The sparse post-quantum ratchet (SPEC §7.8): ML-KEM-768 exchanges carried in erasure-coded
//! chunks on ordinary messages, each completed exchange mixed into the root KDF.
//!
//! Epochs 1, 2, 3, … alternate roles: in an odd epoch the session's initiator sends an
//! encapsulation key and the responder answers with a ciphertext; in an even epoch the roles
//! swap. Each message's header carries the sender's epoch, the epoch whose secret its
//! sending chain was derived with, and at most one chunk.

use hush_crypto::kem::{
    KEM_CIPHERTEXT_LEN, KEM_PUBLIC_KEY_LEN, KemCiphertext, KemKeyPair, KemPublicKey,
};
use hush_crypto::{CryptoRng, SecretBytes};

pub use crate::erasure::CHUNK_LEN;
use crate::erasure::{self, chunks_for};
use crate::error::PqError;

/// Chunks of an encapsulation key (1,184 bytes in 104-byte chunks).
pub const KEY_CHUNKS: usize = chunks_for(KEM_PUBLIC_KEY_LEN);
/// Chunks of a ciphertext (1,088 bytes in 104-byte chunks).
pub const CIPHERTEXT_CHUNKS: usize = chunks_for(KEM_CIPHERTEXT_LEN);
/// Epoch secrets a session keeps: the newest two (SPEC §7.8.5 shows a peer never names an
/// older one).
pub const MAX_EPOCH_SECRETS: usize = 2;

/// One chunk of an encapsulation key or a ciphertext.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    /// The chunk's index, the point of the erasure code it is evaluated at.
    pub index: u8,
    /// The chunk's bytes.
    pub data: [u8; CHUNK_LEN],
}

impl core::fmt::Debug for Chunk {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Chunk({}, ", self.index)?;
        for b in &self.data[..4] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "…)")
    }
}

/// The post-quantum part of a message header (SPEC §7.8.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PqHeader {
    /// The sender's epoch (1 or more).
    pub epoch: u32,
    /// The epoch whose secret the sender's current chain was derived with; 0 if none yet.
    pub mixed: u32,
    /// A chunk of the sender's key or ciphertext, if it is sending one.
    pub chunk: Option<Chunk>,
}

/// Where a session stands in its current epoch.
pub(crate) enum Phase {
    /// Ours to send the key: our key pair, and the ciphertext chunks received so far.
    SendingKey {
        key_pair: KemKeyPair,
        received: Vec<Chunk>,
    },
    /// Ours to answer: the key chunks received so far.
    AwaitingKey { received: Vec<Chunk> },
    /// We encapsulated: sending the ciphertext until the peer enters the next epoch.
    SendingCiphertext { ciphertext: KemCiphertext },
}

/// An epoch's shared secret.
pub(crate) struct EpochSecret {
    pub(crate) epoch: u32,
    pub(crate) secret: SecretBytes<32>,
}

/// A session's post-quantum ratchet state.
pub(crate) struct PqRatchet {
    pub(crate) initiator: bool,
    pub(crate) epoch: u32,
    pub(crate) phase: Phase,
    /// The newest epoch whose secret both sides hold (0: none yet).
    pub(crate) mixable: u32,
    /// The index of the next chunk we send.
    pub(crate) next_chunk: u8,
    /// The newest epoch secrets, oldest first, at most [`MAX_EPOCH_SECRETS`].
    pub(crate) secrets: Vec<EpochSecret>,
}

/// A change that may still need randomness: [`PqPending::finish`] draws it.
pub(crate) enum PqPending {
    /// Nothing to draw.
    Done(PqChange),
    /// Encapsulate to the peer's completed key (32 random bytes).
    Encapsulate(KemPublicKey),
    /// The peer is in the next epoch: our key pair for it (a 64-byte seed).
    Confirm,
}

impl PqPending {
    /// The change, drawing what it needs. Cannot fail.
    pub(crate) fn finish<R: CryptoRng + ?Sized>(self, rng: &mut R) -> PqChange {
        match self {
            Self::Done(change) => change,
            Self::Encapsulate(key) => {
                let (ciphertext, secret) = key.encapsulate(rng);
                PqChange::Encapsulated(ciphertext, secret.into_secret_bytes())
            }
            Self::Confirm => PqChange::Confirmed(KemKeyPair::generate(rng)),
        }
    }
}

/// What an authentic message changes in the post-quantum state (applied only once the whole
/// message has decrypted).
pub(crate) enum PqChange {
    /// Nothing: a stale epoch, a duplicate chunk, or no chunk.
    None,
    /// A new chunk to keep.
    Chunk(Chunk),
    /// The ciphertext is complete and decapsulated: this epoch's secret.
    Decapsulated(SecretBytes<32>),
    /// The key is complete; we encapsulated: the ciphertext to send and the secret.
    Encapsulated(KemCiphertext, SecretBytes<32>),
    /// The peer has our ciphertext (it is in the next epoch): our key pair for that epoch.
    Confirmed(KemKeyPair),
}

impl PqRatchet {
    /// The initiator's state: epoch 1, sending a fresh key.
    pub(crate) fn initiator<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        Self {
            initiator: true,
            epoch: 1,
            phase: Phase::SendingKey {
                key_pair: KemKeyPair::generate(rng),
                received: Vec::new(),
            },
            mixable: 0,
            next_chunk: 0,
            secrets: Vec::new(),
        }
    }

    /// The responder's state: epoch 1, awaiting the initiator's key.
    pub(crate) const fn responder() -> Self {
        Self {
            initiator: false,
            epoch: 1,
            phase: Phase::AwaitingKey {
                received: Vec::new(),
            },
            mixable: 0,
            next_chunk: 0,
            secrets: Vec::new(),
        }
    }

    /// Whether we send the key in `epoch` (else the ciphertext).
    pub(crate) const fn sends_key(initiator: bool, epoch: u32) -> bool {
        (epoch % 2 == 1) == initiator
    }

    /// The secret of `epoch`, if we still hold it.
    pub(crate) fn secret(&self, epoch: u32) -> Option<&SecretBytes<32>> {
        self.secrets
            .iter()
            .find(|s| s.epoch == epoch)
            .map(|s| &s.secret)
    }

    /// The header of our next message (its chain derived with `mixed`), without advancing.
    pub(crate) fn outgoing(&self, mixed: u32) -> PqHeader {
        let index = self.next_chunk;
        let chunk = match &self.phase {
            // A ciphertext chunk shows the peer has the whole key: stop sending it.
            Phase::SendingKey { received, .. } if !received.is_empty() => None,
            Phase::SendingKey { key_pair, .. } => Some(Chunk {
                index,
                data: erasure::encode(key_pair.public().as_bytes(), index),
            }),
            Phase::SendingCiphertext { ciphertext } => Some(Chunk {
                index,
                data: erasure::encode(ciphertext.as_bytes(), index),
            }),
            Phase::AwaitingKey { .. } => None,
        };
        PqHeader {
            epoch: self.epoch,
            mixed,
            chunk,
        }
    }

    /// Records that the header from [`PqRatchet::outgoing`] was sent.
    pub(crate) fn sent(&mut self, header: &PqHeader) {
        if header.chunk.is_some() {
            self.next_chunk = self.next_chunk.wrapping_add(1);
        }
    }

    /// What an authentic header from the peer changes: refused, or what remains to do once
    /// the caller has drawn any other randomness it needs (so that a refusal draws nothing).
    /// Changes nothing itself.
    pub(crate) fn receive(&self, header: &PqHeader) -> Result<PqPending, PqError> {
        let ours = self.epoch;
        let theirs = header.epoch;
        if theirs < ours {
            // From an epoch both sides have left: nothing new in it.
            return Ok(PqPending::Done(PqChange::None));
        }
        let ahead = PqError::EpochAhead { ours, theirs };
        match &self.phase {
            Phase::SendingKey { key_pair, received } => {
                if theirs > ours {
                    return Err(ahead);
                }
                let Some(chunk) = new_chunk(header, received) else {
                    return Ok(PqPending::Done(PqChange::None));
                };
                if received.len() + 1 < CIPHERTEXT_CHUNKS {
                    return Ok(PqPending::Done(PqChange::Chunk(chunk)));
                }
                let bytes = assemble(CIPHERTEXT_CHUNKS, received, chunk, KEM_CIPHERTEXT_LEN)?;
                let ciphertext =
                    KemCiphertext::from_slice(&bytes).map_err(|_| PqError::InvalidPayload)?;
                ours.checked_add(1).ok_or(PqError::EpochsExhausted)?;
                let secret = key_pair.decapsulate(&ciphertext);
                Ok(PqPending::Done(PqChange::Decapsulated(
                    secret.into_secret_bytes(),
                )))
            }
            Phase::AwaitingKey { received } => {
                if theirs > ours {
                    return Err(ahead);
                }
                let Some(chunk) = new_chunk(header, received) else {
                    return Ok(PqPending::Done(PqChange::None));
                };
                if received.len() + 1 < KEY_CHUNKS {
                    return Ok(PqPending::Done(PqChange::Chunk(chunk)));
                }
                let bytes = assemble(KEY_CHUNKS, received, chunk, KEM_PUBLIC_KEY_LEN)?;
                let key = KemPublicKey::from_slice(&bytes).map_err(|_| PqError::InvalidPayload)?;
                Ok(PqPending::Encapsulate(key))
            }
            Phase::SendingCiphertext { .. } => {
                if theirs == ours {
                    // The peer is still sending its key: it has not got our ciphertext yet.
                    return Ok(PqPending::Done(PqChange::None));
                }
                if Some(theirs) != ours.checked_add(1) {
                    return Err(ahead);
                }
                if header.chunk.is_some() {
                    // In its new epoch the peer awaits our key: it has nothing to send.
                    return Err(PqError::UnexpectedChunk);
                }
                Ok(PqPending::Confirm)
            }
        }
    }

    /// The epoch and secret our next sending chain mixes in, once `change` is applied.
    pub(crate) fn mix_after<'a>(
        &'a self,
        change: &'a PqChange,
    ) -> Option<(u32, &'a SecretBytes<32>)> {
        match change {
            PqChange::Decapsulated(secret) => Some((self.epoch, secret)),
            PqChange::Confirmed(_) => self.secret(self.epoch).map(|s| (self.epoch, s)),
            _ => self.secret(self.mixable).map(|s| (self.mixable, s)),
        }
    }

    /// Applies a change from [`PqRatchet::receive`].
    pub(crate) fn apply(&mut self, change: PqChange) {
        match change {
            PqChange::None => {}
            PqChange::Chunk(chunk) => match &mut self.phase {
                Phase::SendingKey { received, .. } | Phase::AwaitingKey { received } => {
                    received.push(chunk);
                }
                Phase::SendingCiphertext { .. } => {}
            },
            PqChange::Decapsulated(secret) => {
                self.keep_secret(secret);
                self.mixable = self.epoch;
                self.epoch += 1;
                self.phase = Phase::AwaitingKey {
                    received: Vec::new(),
                };
                self.next_chunk = 0;
            }
            PqChange::Encapsulated(ciphertext, secret) => {
                self.keep_secret(secret);
                self.phase = Phase::SendingCiphertext { ciphertext };
                self.next_chunk = 0;
            }
            PqChange::Confirmed(key_pair) => {
                self.mixable = self.epoch;
                self.epoch += 1;
                self.phase = Phase::SendingKey {
                    key_pair,
                    received: Vec::new(),
                };
                self.next_chunk = 0;
            }
        }
    }

    fn keep_secret(&mut self, secret: SecretBytes<32>) {
        self.secrets.push(EpochSecret {
            epoch: self.epoch,
            secret,
        });
        while self.secrets.len() > MAX_EPOCH_SECRETS {
            self.secrets.remove(0);
        }
    }

    /// How many chunks are held for the payload being received.
    pub(crate) fn chunks_held(&self) -> usize {
        match &self.phase {
            Phase::SendingKey { received, .. } | Phase::AwaitingKey { received } => received.len(),
            Phase::SendingCiphertext { .. } => 0,
        }
    }
}

/// Chunk `index` of `payload` under the erasure code of SPEC §7.8.3 (for test vectors and
/// other implementations' checks).
pub fn encode_chunk(payload: &[u8], index: u8) -> [u8; CHUNK_LEN] {
    erasure::encode(payload, index)
}

/// The header's chunk if it is one we lack.
fn new_chunk(header: &PqHeader, received: &[Chunk]) -> Option<Chunk> {
    header
        .chunk
        .filter(|c| received.iter().all(|r| r.index != c.index))
}

/// Decodes `k` chunks into the payload of `len` bytes, refusing nonzero padding.
fn assemble(k: usize, received: &[Chunk], last: Chunk, len: usize) -> Result<Vec<u8>, PqError> {
    let chunks: Vec<(u8, [u8; CHUNK_LEN])> = received
        .iter()
        .chain(core::iter::once(&last))
        .map(|c| (c.index, c.data))
        .collect();
    let mut bytes = erasure::decode(k, &chunks);
    if bytes[len..].iter().any(|&b| b != 0) {
        return Err(PqError::InvalidPayload);
    }
    bytes.truncate(len);
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    /// Receive and finish in one go.
    fn recv(pq: &PqRatchet, h: &PqHeader, rng: &mut StdRng) -> Result<PqChange, PqError> {
        pq.receive(h).map(|p| p.finish(rng))
    }

    /// Delivers one header from `from` to `to`, applying the change.
    fn deliver(from: &mut PqRatchet, to: &mut PqRatchet, rng: &mut StdRng) -> PqHeader {
        let h = from.outgoing(from.mixable);
        from.sent(&h);
        let change = recv(to, &h, rng).unwrap();
        to.apply(change);
        h
    }

    #[test]
    fn two_ratchets_agree_on_every_epoch_secret() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut a = PqRatchet::initiator(&mut rng);
        let mut b = PqRatchet::responder();
        for _ in 0..400 {
            deliver(&mut a, &mut b, &mut rng);
            deliver(&mut b, &mut a, &mut rng);
            for s in &a.secrets {
                if let Some(t) = b.secret(s.epoch) {
                    assert_eq!(s.secret.expose(), t.expose(), "epoch {}", s.epoch);
                }
            }
            assert!(a.secrets.len() <= MAX_EPOCH_SECRETS && b.secrets.len() <= MAX_EPOCH_SECRETS);
            assert!(a.chunks_held() < KEY_CHUNKS && b.chunks_held() < KEY_CHUNKS);
        }
        // An epoch takes KEY_CHUNKS + CIPHERTEXT_CHUNKS rounds (the confirmation rides on
        // the round that starts the next one).
        let per_epoch = (KEY_CHUNKS + CIPHERTEXT_CHUNKS) as u32;
        assert!(
            (400 / per_epoch..=400 / per_epoch + 1).contains(&a.epoch),
            "{}",
            a.epoch
        );
        assert_eq!(a.mixable, a.epoch - 1);
    }

    #[test]
    fn the_last_chunk_completes_a_payload_and_duplicates_count_once() {
        let mut rng = StdRng::seed_from_u64(2);
        let a = PqRatchet::initiator(&mut rng);
        let mut b = PqRatchet::responder();
        let ek = match &a.phase {
            Phase::SendingKey { key_pair, .. } => key_pair.public().to_bytes(),
            _ => unreachable!(),
        };
        // Parity chunks only, each sent twice: KEY_CHUNKS - 1 are held, the next completes.
        for x in 0..KEY_CHUNKS as u8 {
            let h = PqHeader {
                epoch: 1,
                mixed: 0,
                chunk: Some(Chunk {
                    index: 200 + x,
                    data: erasure::encode(&ek, 200 + x),
                }),
            };
            for _ in 0..2 {
                let change = recv(&b, &h, &mut rng).unwrap();
                let last = usize::from(x) + 1 == KEY_CHUNKS;
                match (&change, last) {
                    (PqChange::Encapsulated(..), true)
                    | (PqChange::Chunk(_) | PqChange::None, false) => {}
                    _ => panic!("chunk {x}: unexpected change"),
                }
                b.apply(change);
                if last {
                    break;
                }
            }
        }
        assert!(matches!(b.phase, Phase::SendingCiphertext { .. }));
        assert_eq!(b.secrets.len(), 1);
    }

    fn chunk_header(epoch: u32, index: u8, data: [u8; CHUNK_LEN]) -> PqHeader {
        PqHeader {
            epoch,
            mixed: epoch - 1,
            chunk: Some(Chunk { index, data }),
        }
    }

    #[test]
    fn a_peer_ahead_or_out_of_turn_is_refused() {
        let mut rng = StdRng::seed_from_u64(3);
        let a = PqRatchet::initiator(&mut rng);
        let b = PqRatchet::responder();
        let h = chunk_header(2, 0, [0; CHUNK_LEN]);
        assert_eq!(
            recv(&a, &h, &mut rng).err(),
            Some(PqError::EpochAhead { ours: 1, theirs: 2 })
        );
        assert_eq!(
            recv(&b, &h, &mut rng).err(),
            Some(PqError::EpochAhead { ours: 1, theirs: 2 })
        );
        // Answering in epoch 1: the peer may be in 1 (no change) or 2 without a chunk.
        let mut c = PqRatchet::responder();
        let mut a = PqRatchet::initiator(&mut rng);
        for _ in 0..KEY_CHUNKS {
            deliver(&mut a, &mut c, &mut rng);
        }
        assert!(matches!(c.phase, Phase::SendingCiphertext { .. }));
        assert!(matches!(
            recv(&c, &chunk_header(1, 3, [0; CHUNK_LEN]), &mut rng),
            Ok(PqChange::None)
        ));
        assert_eq!(
            recv(&c, &chunk_header(2, 0, [0; CHUNK_LEN]), &mut rng).err(),
            Some(PqError::UnexpectedChunk)
        );
        assert_eq!(
            recv(&c, &chunk_header(3, 0, [0; CHUNK_LEN]), &mut rng).err(),
            Some(PqError::EpochAhead { ours: 1, theirs: 3 })
        );
        let confirm = PqHeader {
            epoch: 2,
            mixed: 1,
            chunk: None,
        };
        assert!(matches!(
            recv(&c, &confirm, &mut rng),
            Ok(PqChange::Confirmed(_))
        ));
        // Stale epochs change nothing.
        let stale = chunk_header(1, 9, [1; CHUNK_LEN]);
        let change = recv(&c, &confirm, &mut rng).unwrap();
        c.apply(change);
        assert!(matches!(recv(&c, &stale, &mut rng), Ok(PqChange::None)));
    }

    #[test]
    fn a_malformed_key_or_ciphertext_is_refused() {
        let mut rng = StdRng::seed_from_u64(4);
        // A "key" of 0xff bytes fails the modulus check.
        let b = {
            let mut b = PqRatchet::responder();
            for x in 0..KEY_CHUNKS as u8 - 1 {
                let change = recv(&b, &chunk_header(1, x, [0xff; CHUNK_LEN]), &mut rng).unwrap();
                b.apply(change);
            }
            b
        };
        let last = chunk_header(1, KEY_CHUNKS as u8 - 1, [0; CHUNK_LEN]);
        assert_eq!(
            recv(&b, &last, &mut rng).err(),
            Some(PqError::InvalidPayload)
        );
        // A ciphertext whose padding is not zero.
        let mut a = PqRatchet::initiator(&mut rng);
        for x in 0..CIPHERTEXT_CHUNKS as u8 - 1 {
            let change = recv(&a, &chunk_header(1, x, [7; CHUNK_LEN]), &mut rng).unwrap();
            a.apply(change);
        }
        let last = chunk_header(1, CIPHERTEXT_CHUNKS as u8 - 1, [7; CHUNK_LEN]);
        assert_eq!(
            recv(&a, &last, &mut rng).err(),
            Some(PqError::InvalidPayload)
        );
        // With zero padding the same bytes decapsulate (to an unrelated secret).
        let mut data = [7; CHUNK_LEN];
        let used = KEM_CIPHERTEXT_LEN - (CIPHERTEXT_CHUNKS - 1) * CHUNK_LEN;
        data[used..].fill(0);
        let last = chunk_header(1, CIPHERTEXT_CHUNKS as u8 - 1, data);
        assert!(matches!(
            recv(&a, &last, &mut rng),
            Ok(PqChange::Decapsulated(_))
        ));
        // At the last epoch, completing it is refused rather than overflowing.
        a.epoch = u32::MAX;
        let last = chunk_header(u32::MAX, CIPHERTEXT_CHUNKS as u8 - 1, data);
        assert_eq!(
            recv(&a, &last, &mut rng).err(),
            Some(PqError::EpochsExhausted)
        );
    }
}
