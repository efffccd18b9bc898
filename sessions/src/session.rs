//! The Double Ratchet session.

use core::fmt;

use hush_crypto::kem::KemCiphertext;
use hush_crypto::{
    CryptoRng, EphemeralKeyPair, IdentityKeyPair, IdentityPublicKey, SecretBytes, X25519KeyPair,
    X25519PublicKey,
};

use crate::bundle::{KemPrekey, OneTimePrekey, PrekeyBundle, SignedPrekey, Suite};
use crate::chain_key::ChainKey;
use crate::error::{AcceptError, DecryptError, EncryptError, IdentityChange, InitError, PqError};
use crate::limits::MAX_PLAINTEXT_LEN;
use crate::message::{Header, PrekeyMessage, RatchetMessage, RatchetView, SessionMessage};
use crate::message_key::MessageKey;
use crate::pq_ratchet::{PqChange, PqPending, PqRatchet};
use crate::receiver_chain::{ReceiverChain, ReceiverChains};
use crate::root_key::RootKey;
use crate::x3dh::{self, AD_LEN};

/// Our current sending chain: the ratchet key pair (public part cached) and its chain key.
pub(crate) struct SenderChain {
    pub(crate) ratchet: X25519KeyPair,
    pub(crate) chain_key: ChainKey,
    /// The post-quantum epoch whose secret this chain was derived with (0: none).
    pub(crate) pq_mixed: u32,
}

/// A DH ratchet step whose sending half waits for the next encryption (SPEC §7.4 step 3):
/// receiving costs one X25519 agreement, and the new key pair's public key and second
/// agreement are computed when a message is sent. Everything the sending half needs is fixed
/// on receipt, so the result is the same as computing it then.
pub(crate) struct PendingStep {
    /// `DHs_new`'s private key, drawn on receipt.
    pub(crate) secret: SecretBytes<32>,
    /// The peer's new ratchet key `DHr'`.
    pub(crate) their: X25519PublicKey,
    /// `PQmix` for the new chain, and its secret (kept here: the ratchet may drop it first).
    pub(crate) pq_mixed: u32,
    pub(crate) pq_secret: Option<SecretBytes<32>>,
}

impl PendingStep {
    /// The new sending chain and root key: `KDF_RK(_PQ)(RK, DH(DHs_new, DHr'))`.
    pub(crate) fn resolve(&self, root_key: &RootKey) -> Option<(RootKey, SenderChain)> {
        let ratchet = X25519KeyPair::from_secret_bytes(&self.secret);
        // Cannot fail: the receiving half's agreement with this key was not all-zero, so the
        // key has no low-order part a clamped scalar would not remove.
        let dh = ratchet.diffie_hellman(&self.their).ok()?;
        let (root_key, chain_key) = root_key.advance_pq(&dh, self.pq_secret.as_ref());
        Some((
            root_key,
            SenderChain {
                ratchet,
                chain_key,
                pq_mixed: self.pq_mixed,
            },
        ))
    }
}

/// The X3DH or PQXDH parameters a prekey message carries: the initiator repeats them in every
/// message until it hears back, and the responder remembers them to recognise those repeats.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct PrekeyParams {
    pub(crate) base_key: X25519PublicKey,
    pub(crate) signed_prekey_id: u32,
    pub(crate) one_time_prekey_id: Option<u32>,
    /// PQXDH: the KEM prekey id and the ciphertext.
    pub(crate) kem: Option<(u32, KemCiphertext)>,
}

/// Which bundles [`Session::initiate_with`] starts a session from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SuitePolicy {
    /// PQXDH whenever the bundle offers it, X3DH from a bundle whose signed prekey is
    /// classical (a peer that has not moved to the post-quantum suite). A bundle whose
    /// signed prekey promises a KEM prekey it lacks is always refused.
    #[default]
    PostQuantumWhenOffered,
    /// PQXDH only: a classical bundle is refused with [`InitError::ClassicalRefused`].
    PostQuantumOnly,
}

/// A one-to-one session: X3DH followed by the Double Ratchet.
///
/// Sans-I/O: it takes bytes and an RNG and returns bytes or typed errors. Decryption works
/// on the side and commits only after the AEAD tag verifies, so a failed decrypt leaves the
/// session byte-for-byte as it was.
pub struct Session {
    pub(crate) local_identity: IdentityPublicKey,
    pub(crate) remote_identity: IdentityPublicKey,
    pub(crate) associated_data: [u8; AD_LEN],
    pub(crate) root_key: RootKey,
    pub(crate) sender: SenderChain,
    pub(crate) previous_counter: u32,
    pub(crate) receivers: ReceiverChains,
    pub(crate) pending_prekey: Option<PrekeyParams>,
    pub(crate) accepted_prekey: Option<PrekeyParams>,
    /// Whether the session was agreed with PQXDH.
    pub(crate) post_quantum: bool,
    /// The post-quantum ratchet, if the session runs it.
    pub(crate) pq: Option<PqRatchet>,
    /// A DH ratchet step received and not yet completed by sending.
    pub(crate) pending_step: Option<PendingStep>,
}

/// Where a session's post-quantum ratchet stands (SPEC §7.8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PqStatus {
    /// The current epoch (1 or more).
    pub epoch: u32,
    /// The newest epoch whose ML-KEM secret both sides hold and mix into new chains (0: none
    /// yet beyond PQXDH's).
    pub mixed: u32,
    /// Whether our current sending chain was derived with that newest secret.
    pub sending_chain_current: bool,
    /// Chunks of the peer's key or ciphertext held for the current epoch (always fewer
    /// than the payload needs: the last one completes it).
    pub chunks_held: usize,
}

/// Room for `AD ‖ header` without allocating: every canonical header fits (at most 171
/// bytes with the post-quantum part).
const AD_INLINE: usize = 256;

/// A message's associated data `AD ‖ header bytes` (SPEC §8).
// Transient, on the stack for one call: the large inline variant is the point.
#[allow(clippy::large_enum_variant)]
enum Ad {
    Inline([u8; AD_INLINE], usize),
    Heap(Vec<u8>),
}

impl core::ops::Deref for Ad {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Self::Inline(buf, len) => &buf[..*len],
            Self::Heap(v) => v,
        }
    }
}

/// Changes a successful decryption will commit.
struct Staged {
    plaintext: Vec<u8>,
    change: Change,
    pq: PqChange,
}

// Transient: built and consumed within one decrypt call, never stored.
#[allow(clippy::large_enum_variant)]
enum Change {
    /// A key from the skipped store was used.
    UsedSkipped(usize),
    /// A known receiving chain advanced.
    Advanced {
        chain: usize,
        next: ChainKey,
        skipped: Vec<MessageKey>,
    },
    /// A new peer ratchet key: a DH ratchet step, its sending half pending.
    Ratchet {
        /// `RK1`, after the receiving half.
        root_key: RootKey,
        step: PendingStep,
        /// PN for the new chain: the length of the chain it replaces.
        previous_counter: u32,
        /// The previous receiving chain, advanced to PN, and the keys it skipped.
        old_chain: Option<(ChainKey, Vec<MessageKey>)>,
        new_chain: ReceiverChain,
        new_chain_skipped: Vec<MessageKey>,
    },
}

impl PrekeyParams {
    fn of(message: &PrekeyMessage) -> Self {
        Self {
            base_key: *message.base_key(),
            signed_prekey_id: message.signed_prekey_id(),
            one_time_prekey_id: message.one_time_prekey_id(),
            kem: message
                .kem_prekey_id()
                .zip(message.kem_ciphertext().cloned()),
        }
    }
}

fn check_trust(
    known: Option<&IdentityPublicKey>,
    received: &IdentityPublicKey,
) -> Result<(), Box<IdentityChange>> {
    match known {
        Some(k) if k != received => Err(Box::new(IdentityChange {
            known: *k,
            received: *received,
        })),
        _ => Ok(()),
    }
}

impl Session {
    /// Starts a session as the initiator (Alice) from the peer's prekey bundle, with the
    /// default [`SuitePolicy`]: PQXDH when the bundle offers it.
    ///
    /// `known_identity` is the peer identity key the caller already trusts, if any. A bundle
    /// with a different key is refused with [`InitError::IdentityChanged`]; it is never
    /// accepted silently.
    pub fn initiate<R: CryptoRng + ?Sized>(
        our_identity: &IdentityKeyPair,
        bundle: &PrekeyBundle,
        known_identity: Option<&IdentityPublicKey>,
        rng: &mut R,
    ) -> Result<Self, InitError> {
        Self::initiate_with(
            our_identity,
            bundle,
            known_identity,
            SuitePolicy::default(),
            rng,
        )
    }

    /// [`Session::initiate`] under an explicit [`SuitePolicy`].
    pub fn initiate_with<R: CryptoRng + ?Sized>(
        our_identity: &IdentityKeyPair,
        bundle: &PrekeyBundle,
        known_identity: Option<&IdentityPublicKey>,
        policy: SuitePolicy,
        rng: &mut R,
    ) -> Result<Self, InitError> {
        check_trust(known_identity, bundle.identity_key()).map_err(InitError::IdentityChanged)?;
        let suite = bundle.verify()?;
        if suite == Suite::Classical && policy == SuitePolicy::PostQuantumOnly {
            return Err(InitError::ClassicalRefused);
        }
        let base = EphemeralKeyPair::generate(rng);
        let base_key = *base.public();
        let kem = bundle.kem_prekey().map(|k| {
            let (ciphertext, secret) = k.key.encapsulate(rng);
            (k.id, ciphertext, secret)
        });
        let opk = bundle.one_time_prekey();
        let sk = x3dh::initiator(
            our_identity,
            base,
            bundle.identity_key(),
            bundle.signed_prekey(),
            opk.map(|(_, k)| k),
            kem.as_ref().map(|(_, _, ss)| ss),
        )
        .map_err(|_| InitError::NonContributory)?;
        let ratchet = X25519KeyPair::generate(rng);
        let dh = ratchet
            .diffie_hellman(bundle.signed_prekey())
            .map_err(|_| InitError::NonContributory)?;
        let (root_key, chain_key) = RootKey::new(sk).advance(&dh);
        // PQXDH sessions run the post-quantum ratchet (SPEC §7.8.1).
        let pq = (suite == Suite::PostQuantum).then(|| PqRatchet::initiator(rng));
        Ok(Self {
            local_identity: *our_identity.public(),
            remote_identity: *bundle.identity_key(),
            associated_data: x3dh::associated_data(our_identity.public(), bundle.identity_key()),
            root_key,
            sender: SenderChain {
                ratchet,
                chain_key,
                pq_mixed: 0,
            },
            previous_counter: 0,
            receivers: ReceiverChains::default(),
            pending_prekey: Some(PrekeyParams {
                base_key,
                signed_prekey_id: bundle.signed_prekey_id(),
                one_time_prekey_id: opk.map(|(id, _)| *id),
                kem: kem.map(|(id, ct, _)| (id, ct)),
            }),
            accepted_prekey: None,
            post_quantum: suite == Suite::PostQuantum,
            pq,
            pending_step: None,
        })
    }

    /// Starts a session as the responder (Bob) from an incoming X3DH prekey message, and
    /// decrypts it: [`Session::accept_with_kem`] without a KEM prekey.
    pub fn accept<R: CryptoRng + ?Sized>(
        our_identity: &IdentityKeyPair,
        signed_prekey: &SignedPrekey,
        one_time_prekey: Option<&OneTimePrekey>,
        message: &PrekeyMessage,
        known_identity: Option<&IdentityPublicKey>,
        rng: &mut R,
    ) -> Result<(Self, Vec<u8>), AcceptError> {
        Self::accept_with_kem(
            our_identity,
            signed_prekey,
            one_time_prekey,
            None,
            message,
            known_identity,
            rng,
        )
    }

    /// Starts a session as the responder (Bob) from an incoming prekey message, and decrypts
    /// it. Returns the session and the first plaintext.
    ///
    /// The caller looks up the prekeys the message names ([`PrekeyMessage::signed_prekey_id`],
    /// [`PrekeyMessage::one_time_prekey_id`], [`PrekeyMessage::kem_prekey_id`]) and passes
    /// them in. Nothing is consumed on failure; on success the caller must delete the
    /// one-time prekey and the one-time KEM prekey, so each is used once, and for its
    /// last-resort KEM prekey record [`PrekeyMessage::kem_prekey_use`], having refused the
    /// message before calling this if that use was already recorded.
    pub fn accept_with_kem<R: CryptoRng + ?Sized>(
        our_identity: &IdentityKeyPair,
        signed_prekey: &SignedPrekey,
        one_time_prekey: Option<&OneTimePrekey>,
        kem_prekey: Option<&KemPrekey>,
        message: &PrekeyMessage,
        known_identity: Option<&IdentityPublicKey>,
        rng: &mut R,
    ) -> Result<(Self, Vec<u8>), AcceptError> {
        check_trust(known_identity, message.identity_key())
            .map_err(AcceptError::IdentityChanged)?;
        if signed_prekey.id() != message.signed_prekey_id() {
            return Err(AcceptError::WrongSignedPrekey {
                expected: message.signed_prekey_id(),
                got: signed_prekey.id(),
            });
        }
        let opk = match (message.one_time_prekey_id(), one_time_prekey) {
            (None, _) => None,
            (Some(id), Some(k)) if k.id() == id => Some(k.key_pair()),
            (Some(id), _) => return Err(AcceptError::MissingOneTimePrekey(Some(id))),
        };
        let kem = match (
            message.kem_prekey_id(),
            message.kem_ciphertext(),
            kem_prekey,
        ) {
            (Some(id), Some(ct), Some(k)) if k.id() == id => Some(k.key_pair().decapsulate(ct)),
            (Some(id), _, _) => return Err(AcceptError::MissingKemPrekey(id)),
            // Every bundle of a post-quantum signed prekey carries a KEM prekey: X3DH on it
            // means someone removed it.
            (None, _, _) if signed_prekey.suite() == Suite::PostQuantum => {
                return Err(AcceptError::ClassicalRefused);
            }
            (None, _, _) => None,
        };
        let sk = x3dh::responder(
            our_identity,
            signed_prekey.key_pair(),
            opk,
            message.identity_key(),
            message.base_key(),
            kem.as_ref(),
        )
        .map_err(|_| AcceptError::NonContributory)?;
        let mut session = Self {
            local_identity: *our_identity.public(),
            remote_identity: *message.identity_key(),
            associated_data: x3dh::associated_data(message.identity_key(), our_identity.public()),
            root_key: RootKey::new(sk),
            // Bob's first ratchet key is his signed prekey.
            sender: SenderChain {
                ratchet: signed_prekey.key_pair().duplicate(),
                chain_key: ChainKey::new(hush_crypto::SecretBytes::from_bytes([0; 32]), 0),
                pq_mixed: 0,
            },
            previous_counter: 0,
            receivers: ReceiverChains::default(),
            pending_prekey: None,
            accepted_prekey: Some(PrekeyParams::of(message)),
            post_quantum: message.is_post_quantum(),
            // The initiator's headers say whether it runs the post-quantum ratchet; they are
            // authenticated, so the choice cannot be stripped (SPEC §7.8.1).
            pq: message
                .message()
                .header()
                .pq
                .is_some()
                .then(PqRatchet::responder),
            pending_step: None,
        };
        let plaintext = session.decrypt_ratchet(&message.message().view(), rng)?;
        Ok((session, plaintext))
    }

    /// The peer's identity key.
    pub const fn remote_identity(&self) -> &IdentityPublicKey {
        &self.remote_identity
    }

    /// Our identity key.
    pub const fn local_identity(&self) -> &IdentityPublicKey {
        &self.local_identity
    }

    /// How many skipped message keys the session holds (at most
    /// [`MAX_SKIPPED_KEYS`](crate::limits::MAX_SKIPPED_KEYS)).
    pub fn skipped_keys(&self) -> usize {
        self.receivers.skipped.len()
    }

    /// How many receiving chains the session holds (at most
    /// [`MAX_RECEIVER_CHAINS`](crate::limits::MAX_RECEIVER_CHAINS)).
    pub fn receiving_chains(&self) -> usize {
        self.receivers.chains.len()
    }

    /// Whether the session was agreed with PQXDH (an ML-KEM-768 secret in its root key), so
    /// that recording its first messages now and breaking X25519 later does not reveal them.
    pub const fn is_post_quantum(&self) -> bool {
        self.post_quantum
    }

    /// The post-quantum ratchet's progress, if the session runs it.
    pub fn pq_ratchet(&self) -> Option<PqStatus> {
        self.pq.as_ref().map(|pq| PqStatus {
            epoch: pq.epoch,
            mixed: pq.mixable,
            sending_chain_current: self.sending_pq_mixed() == pq.mixable,
            chunks_held: pq.chunks_held(),
        })
    }

    /// `PQmix` of the chain the next message is sent on.
    fn sending_pq_mixed(&self) -> u32 {
        self.pending_step
            .as_ref()
            .map_or(self.sender.pq_mixed, |p| p.pq_mixed)
    }

    /// Whether outgoing messages still carry the X3DH parameters (the initiator has not yet
    /// received a reply).
    pub const fn awaiting_reply(&self) -> bool {
        self.pending_prekey.is_some()
    }

    /// The X3DH base key that identifies this session: ours as initiator, the peer's as
    /// responder. A responder uses it to route repeated prekey messages to this session.
    pub fn base_key(&self) -> Option<&X25519PublicKey> {
        self.accepted_prekey
            .as_ref()
            .or(self.pending_prekey.as_ref())
            .map(|p| &p.base_key)
    }

    /// Encrypts `plaintext`. Does not need randomness: a new ratchet key's private key is
    /// drawn on receipt (its public key and agreement are computed here, once, after a DH
    /// ratchet step).
    pub fn encrypt(&mut self, plaintext: &[u8]) -> Result<SessionMessage, EncryptError> {
        if plaintext.len() > MAX_PLAINTEXT_LEN {
            return Err(EncryptError::TooLarge {
                len: plaintext.len(),
                max: MAX_PLAINTEXT_LEN,
            });
        }
        if let Some(step) = &self.pending_step {
            let (root_key, sender) = step
                .resolve(&self.root_key)
                .ok_or(EncryptError::InvalidRatchetKey)?;
            self.root_key = root_key;
            self.sender = sender;
            self.pending_step = None;
        }
        let (message_key, next) = self
            .sender
            .chain_key
            .step()
            .ok_or(EncryptError::ChainExhausted)?;
        let header = Header {
            ratchet_key: *self.sender.ratchet.public(),
            previous_chain_length: self.previous_counter,
            message_number: message_key.index(),
            pq: self.pq.as_ref().map(|pq| pq.outgoing(self.sender.pq_mixed)),
        };
        let header_bytes = header.encode();
        let ad = self.message_ad(&header_bytes);
        let ciphertext =
            message_key
                .encrypt(&ad, plaintext)
                .map_err(|_| EncryptError::TooLarge {
                    len: plaintext.len(),
                    max: MAX_PLAINTEXT_LEN,
                })?;
        self.sender.chain_key = next;
        if let (Some(pq), Some(h)) = (&mut self.pq, &header.pq) {
            pq.sent(h);
        }
        let message = RatchetMessage::new(header, header_bytes, ciphertext);
        Ok(match &self.pending_prekey {
            None => SessionMessage::Ratchet(message),
            Some(p) => SessionMessage::Prekey(Box::new(PrekeyMessage::new(
                self.local_identity,
                p.base_key,
                p.signed_prekey_id,
                p.one_time_prekey_id,
                message,
                p.kem.clone(),
            ))),
        })
    }

    /// Decrypts a message from the peer. On any error the session is unchanged.
    ///
    /// A prekey message is accepted here only if it repeats exactly the X3DH parameters that
    /// started this session (the initiator repeats them until it hears back).
    pub fn decrypt<R: CryptoRng + ?Sized>(
        &mut self,
        message: &SessionMessage,
        rng: &mut R,
    ) -> Result<Vec<u8>, DecryptError> {
        if let SessionMessage::Prekey(p) = message
            && (self.accepted_prekey.as_ref() != Some(&PrekeyParams::of(p))
                || p.identity_key() != &self.remote_identity)
        {
            return Err(DecryptError::WrongSession);
        }
        self.decrypt_ratchet(&message.ratchet_message().view(), rng)
    }

    /// Decodes and decrypts wire bytes.
    pub fn decrypt_bytes<R: CryptoRng + ?Sized>(
        &mut self,
        bytes: &[u8],
        rng: &mut R,
    ) -> Result<Vec<u8>, DecryptError> {
        // A ratchet message is decrypted straight from the bytes (one pass, no copies);
        // anything else is decoded in full first.
        if let Some(view) = crate::message::fast::ratchet_view(bytes) {
            return self.decrypt_ratchet(&view, rng);
        }
        self.decrypt(&SessionMessage::from_bytes(bytes)?, rng)
    }

    fn message_ad(&self, header_bytes: &[u8]) -> Ad {
        let len = AD_LEN + header_bytes.len();
        if len <= AD_INLINE {
            let mut buf = [0u8; AD_INLINE];
            buf[..AD_LEN].copy_from_slice(&self.associated_data);
            buf[AD_LEN..len].copy_from_slice(header_bytes);
            Ad::Inline(buf, len)
        } else {
            Ad::Heap([&self.associated_data[..], header_bytes].concat())
        }
    }

    fn decrypt_ratchet<R: CryptoRng + ?Sized>(
        &mut self,
        message: &RatchetView<'_>,
        rng: &mut R,
    ) -> Result<Vec<u8>, DecryptError> {
        let staged = self.stage(message, rng)?;
        self.commit(staged.change);
        if let Some(pq) = &mut self.pq {
            pq.apply(staged.pq);
        }
        Ok(staged.plaintext)
    }

    /// Computes everything a decryption would change, without changing anything.
    fn stage<R: CryptoRng + ?Sized>(
        &self,
        message: &RatchetView<'_>,
        rng: &mut R,
    ) -> Result<Staged, DecryptError> {
        let header = &message.header;
        if self.pq.is_some() != header.pq.is_some() {
            return Err(PqError::Missing.into());
        }
        let ad = self.message_ad(message.header_bytes);
        let n = header.message_number;
        if let Some(chain) = self.receivers.find_chain(&header.ratchet_key) {
            let current = &self.receivers.chains[chain].chain_key;
            if n < current.index() {
                return self.stage_skipped(header, &ad, message.ciphertext, rng);
            }
            let (skipped, at) = current.skip_to(n)?;
            let (message_key, next) = at.step().ok_or(DecryptError::Authentication)?;
            let plaintext = message_key.decrypt(&ad, message.ciphertext)?;
            return Ok(Staged {
                plaintext,
                change: Change::Advanced {
                    chain,
                    next,
                    skipped,
                },
                pq: self.stage_pq(header, rng)?,
            });
        }
        if self
            .receivers
            .find_skipped(&header.ratchet_key, n)
            .is_some()
        {
            // A late message for a chain that was already dropped.
            return self.stage_skipped(header, &ad, message.ciphertext, rng);
        }
        // A new ratchet key: finish the current receiving chain up to PN, then step.
        let old_chain = match self.receivers.chains.back() {
            Some(current) => {
                let (skipped, at) = current.chain_key.skip_to(header.previous_chain_length)?;
                Some((at, skipped))
            }
            None => None,
        };
        // The peer's chain mixed in the secret its header names. An honest peer names one we
        // hold (SPEC §7.8.5); without it the message cannot be authenticated.
        let their_secret = match (&self.pq, header.pq.map(|h| h.mixed)) {
            (Some(pq), Some(mixed)) if mixed != 0 => {
                Some(pq.secret(mixed).ok_or(DecryptError::Authentication)?)
            }
            _ => None,
        };
        let their = &header.ratchet_key;
        // A step still pending (the peer sent a second new ratchet key before hearing from
        // us, which an honest peer does not) is completed first, on the side.
        let resolved = match &self.pending_step {
            Some(step) => Some(
                step.resolve(&self.root_key)
                    .ok_or(DecryptError::InvalidRatchetKey(step.their))?,
            ),
            None => None,
        };
        let (base_root, base_ratchet, previous_counter) = match &resolved {
            Some((root, sender)) => (root, &sender.ratchet, 0),
            None => (
                &self.root_key,
                &self.sender.ratchet,
                self.sender.chain_key.index(),
            ),
        };
        let dh = base_ratchet
            .diffie_hellman(their)
            .map_err(|_| DecryptError::InvalidRatchetKey(*their))?;
        let (root_key, receiving) = base_root.advance_pq(&dh, their_secret);
        let (new_chain_skipped, at) = receiving.skip_to(n)?;
        let (message_key, next) = at.step().ok_or(DecryptError::Authentication)?;
        let plaintext = message_key.decrypt(&ad, message.ciphertext)?;
        // Everything that can refuse the message comes before any randomness is drawn; then
        // the new ratchet key, then what the post-quantum ratchet draws (SPEC §7.4 step 3).
        let pq_pending = self.pending_pq(header)?;
        let secret = SecretBytes::<32>::random(rng);
        let pq_change = pq_pending.finish(rng);
        // Our new chain mixes in the newest secret both sides hold, this message's included.
        let (pq_mixed, our_secret) = match &self.pq {
            Some(pq) => pq
                .mix_after(&pq_change)
                .map_or((0, None), |(e, s)| (e, Some(s))),
            None => (0, None),
        };
        Ok(Staged {
            plaintext,
            change: Change::Ratchet {
                root_key,
                step: PendingStep {
                    secret,
                    their: *their,
                    pq_mixed,
                    pq_secret: our_secret.map(SecretBytes::duplicate),
                },
                previous_counter,
                old_chain,
                new_chain: ReceiverChain {
                    ratchet_key: *their,
                    chain_key: next,
                },
                new_chain_skipped,
            },
            pq: pq_change,
        })
    }

    /// What an authentic message's post-quantum part changes.
    fn stage_pq<R: CryptoRng + ?Sized>(
        &self,
        header: &Header,
        rng: &mut R,
    ) -> Result<PqChange, DecryptError> {
        Ok(self.pending_pq(header)?.finish(rng))
    }

    /// [`Session::stage_pq`] up to the point where randomness is needed.
    fn pending_pq(&self, header: &Header) -> Result<PqPending, DecryptError> {
        match (&self.pq, &header.pq) {
            (Some(pq), Some(h)) => Ok(pq.receive(h)?),
            _ => Ok(PqPending::Done(PqChange::None)),
        }
    }

    fn stage_skipped<R: CryptoRng + ?Sized>(
        &self,
        header: &Header,
        ad: &[u8],
        ciphertext: &[u8],
        rng: &mut R,
    ) -> Result<Staged, DecryptError> {
        let index = self
            .receivers
            .find_skipped(&header.ratchet_key, header.message_number)
            .ok_or(DecryptError::Duplicate)?;
        let plaintext = self.receivers.skipped[index].key.decrypt(ad, ciphertext)?;
        Ok(Staged {
            plaintext,
            change: Change::UsedSkipped(index),
            pq: self.stage_pq(header, rng)?,
        })
    }

    fn commit(&mut self, change: Change) {
        match change {
            Change::UsedSkipped(index) => {
                self.receivers.skipped.remove(index);
            }
            Change::Advanced {
                chain,
                next,
                skipped,
            } => {
                let ratchet_key = self.receivers.chains[chain].ratchet_key;
                self.receivers.chains[chain].chain_key = next;
                self.receivers.add_skipped(ratchet_key, skipped);
            }
            Change::Ratchet {
                root_key,
                step,
                previous_counter,
                old_chain,
                new_chain,
                new_chain_skipped,
            } => {
                if let (Some(current), Some((at, skipped))) =
                    (self.receivers.chains.back_mut(), old_chain)
                {
                    // The old chain ends at PN: its keys below PN are now only in the store.
                    current.chain_key = at;
                    let key = current.ratchet_key;
                    self.receivers.add_skipped(key, skipped);
                }
                let new_key = new_chain.ratchet_key;
                self.receivers.add_chain(new_chain);
                self.receivers.add_skipped(new_key, new_chain_skipped);
                self.previous_counter = previous_counter;
                self.pending_step = Some(step);
                self.root_key = root_key;
            }
        }
        // Any authentic message from the peer means it has our session: stop sending X3DH.
        self.pending_prekey = None;
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("local_identity", &self.local_identity)
            .field("remote_identity", &self.remote_identity)
            .field("sending_index", &self.sender.chain_key.index())
            .field("ratchet_step_pending", &self.pending_step.is_some())
            .field("receiving_chains", &self.receivers.chains.len())
            .field("skipped_keys", &self.receivers.skipped.len())
            .field("awaiting_reply", &self.awaiting_reply())
            .field("post_quantum", &self.post_quantum)
            .field("pq_ratchet", &self.pq_ratchet())
            .finish_non_exhaustive()
    }
}
