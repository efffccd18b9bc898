//! Prekeys and prekey bundles.

use core::fmt;

use hush_crypto::kem::{KEM_SEED_LEN, KemKeyPair, KemPublicKey};
use hush_crypto::{
    CryptoRng, IdentityKeyPair, IdentityPublicKey, SecretBytes, Signature, X25519KeyPair,
    X25519PublicKey,
};
use prost::Message as _;

use crate::error::{BundleError, DecodeError};
use crate::message::{decode_strict, kem_key, key32, signature64};
use crate::proto;

/// Version of the prekey bundle encoding.
pub const BUNDLE_VERSION: u32 = 1;

/// Prefix of the message an identity key signs to certify a signed prekey of the classical
/// suite: `"hush signed prekey v1" ‖ id (u32, big-endian) ‖ prekey (32 bytes)`.
pub const SIGNED_PREKEY_CONTEXT: &[u8] = hush_crypto::labels::SIGNED_PREKEY_CONTEXT;

/// Prefix of the message an identity key signs to certify a signed prekey of the
/// post-quantum suite, which promises a KEM prekey beside it in every bundle:
/// `"hush signed prekey PQXDH v1" ‖ id ‖ prekey`.
pub const PQ_SIGNED_PREKEY_CONTEXT: &[u8] = hush_crypto::labels::PQ_SIGNED_PREKEY_CONTEXT;

/// Prefix of the message an identity key signs to certify a KEM prekey:
/// `"hush KEM prekey ML-KEM-768 v1" ‖ id (u32, big-endian) ‖ key (1,184 bytes)`.
pub const KEM_PREKEY_CONTEXT: &[u8] = hush_crypto::labels::KEM_PREKEY_CONTEXT;

/// The key agreement a signed prekey is published for, fixed by its signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Suite {
    /// X3DH: a bundle carries no KEM prekey.
    Classical,
    /// PQXDH with ML-KEM-768: every bundle carries a signed KEM prekey, and the signed
    /// prekey's signature says so, so that a bundle stripped of it is refused.
    PostQuantum,
}

impl Suite {
    const fn context(self) -> &'static [u8] {
        match self {
            Self::Classical => SIGNED_PREKEY_CONTEXT,
            Self::PostQuantum => PQ_SIGNED_PREKEY_CONTEXT,
        }
    }
}

/// The exact bytes signed for classical signed prekey `id` with public key `key`.
pub fn signed_prekey_message(id: u32, key: &X25519PublicKey) -> Vec<u8> {
    suite_signed_prekey_message(Suite::Classical, id, key)
}

/// The exact bytes signed for signed prekey `id` with public key `key` in `suite`.
pub fn suite_signed_prekey_message(suite: Suite, id: u32, key: &X25519PublicKey) -> Vec<u8> {
    let context = suite.context();
    let mut m = Vec::with_capacity(context.len() + 4 + 32);
    m.extend_from_slice(context);
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(key.as_bytes());
    m
}

/// The exact bytes signed for KEM prekey `id` with public key `key`.
pub fn kem_prekey_message(id: u32, key: &KemPublicKey) -> Vec<u8> {
    let mut m = Vec::with_capacity(KEM_PREKEY_CONTEXT.len() + 4 + key.as_bytes().len());
    m.extend_from_slice(KEM_PREKEY_CONTEXT);
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(key.as_bytes());
    m
}

/// A signed prekey with its private key, kept by its owner.
pub struct SignedPrekey {
    id: u32,
    suite: Suite,
    pair: X25519KeyPair,
    signature: Signature,
}

impl SignedPrekey {
    /// Generates classical signed prekey `id` and signs it with `identity`.
    pub fn generate<R: CryptoRng + ?Sized>(
        id: u32,
        identity: &IdentityKeyPair,
        rng: &mut R,
    ) -> Self {
        Self::generate_for(Suite::Classical, id, identity, rng)
    }

    /// Generates signed prekey `id` for `suite` and signs it with `identity`. A
    /// [`Suite::PostQuantum`] prekey must be published with a [`KemPrekey`] in every bundle.
    pub fn generate_for<R: CryptoRng + ?Sized>(
        suite: Suite,
        id: u32,
        identity: &IdentityKeyPair,
        rng: &mut R,
    ) -> Self {
        let pair = X25519KeyPair::generate(rng);
        let signature = identity.sign(&suite_signed_prekey_message(suite, id, pair.public()));
        Self {
            id,
            suite,
            pair,
            signature,
        }
    }

    /// Rebuilds a stored signed prekey of `suite`.
    pub fn from_parts(
        suite: Suite,
        id: u32,
        secret: &SecretBytes<32>,
        signature: Signature,
    ) -> Self {
        Self {
            id,
            suite,
            pair: X25519KeyPair::from_secret_bytes(secret),
            signature,
        }
    }

    /// The prekey id.
    pub const fn id(&self) -> u32 {
        self.id
    }

    /// The suite its signature declares.
    pub const fn suite(&self) -> Suite {
        self.suite
    }

    /// The public key.
    pub const fn public_key(&self) -> &X25519PublicKey {
        self.pair.public()
    }

    /// The identity key's signature over [`signed_prekey_message`].
    pub const fn signature(&self) -> &Signature {
        &self.signature
    }

    /// The private key, for storage.
    pub fn secret_bytes(&self) -> SecretBytes<32> {
        self.pair.secret_bytes()
    }

    pub(crate) const fn key_pair(&self) -> &X25519KeyPair {
        &self.pair
    }
}

impl fmt::Debug for SignedPrekey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedPrekey")
            .field("id", &self.id)
            .field("public", self.pair.public())
            .finish_non_exhaustive()
    }
}

/// A one-time prekey with its private key, kept by its owner until a session consumes it.
pub struct OneTimePrekey {
    id: u32,
    pair: X25519KeyPair,
}

impl OneTimePrekey {
    /// Generates one-time prekey `id`.
    pub fn generate<R: CryptoRng + ?Sized>(id: u32, rng: &mut R) -> Self {
        Self {
            id,
            pair: X25519KeyPair::generate(rng),
        }
    }

    /// Rebuilds a stored one-time prekey.
    pub fn from_secret_bytes(id: u32, secret: &SecretBytes<32>) -> Self {
        Self {
            id,
            pair: X25519KeyPair::from_secret_bytes(secret),
        }
    }

    /// The prekey id.
    pub const fn id(&self) -> u32 {
        self.id
    }

    /// The public key.
    pub const fn public_key(&self) -> &X25519PublicKey {
        self.pair.public()
    }

    /// The private key, for storage.
    pub fn secret_bytes(&self) -> SecretBytes<32> {
        self.pair.secret_bytes()
    }

    pub(crate) const fn key_pair(&self) -> &X25519KeyPair {
        &self.pair
    }
}

impl fmt::Debug for OneTimePrekey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OneTimePrekey")
            .field("id", &self.id)
            .field("public", self.pair.public())
            .finish_non_exhaustive()
    }
}

/// An ML-KEM-768 prekey with its private key (kept as its seed), signed by its owner's
/// identity key. A **one-time** KEM prekey is handed out once and deleted after its first
/// session; the **last-resort** one is handed out when none is left, so its owner refuses a
/// second session with the same (KEM prekey id, signed prekey id, base key): see
/// [`PrekeyMessage::kem_prekey_use`](crate::PrekeyMessage::kem_prekey_use).
pub struct KemPrekey {
    id: u32,
    last_resort: bool,
    pair: KemKeyPair,
    signature: Signature,
}

impl KemPrekey {
    /// Generates one-time KEM prekey `id` and signs it with `identity`.
    pub fn generate_one_time<R: CryptoRng + ?Sized>(
        id: u32,
        identity: &IdentityKeyPair,
        rng: &mut R,
    ) -> Self {
        Self::generate(id, false, identity, rng)
    }

    /// Generates last-resort KEM prekey `id` and signs it with `identity`.
    pub fn generate_last_resort<R: CryptoRng + ?Sized>(
        id: u32,
        identity: &IdentityKeyPair,
        rng: &mut R,
    ) -> Self {
        Self::generate(id, true, identity, rng)
    }

    fn generate<R: CryptoRng + ?Sized>(
        id: u32,
        last_resort: bool,
        identity: &IdentityKeyPair,
        rng: &mut R,
    ) -> Self {
        let pair = KemKeyPair::generate(rng);
        let signature = identity.sign(&kem_prekey_message(id, pair.public()));
        Self {
            id,
            last_resort,
            pair,
            signature,
        }
    }

    /// Rebuilds a stored KEM prekey from its seed (taken by value) and signature.
    pub fn from_parts(
        id: u32,
        last_resort: bool,
        seed: SecretBytes<KEM_SEED_LEN>,
        signature: Signature,
    ) -> Self {
        Self {
            id,
            last_resort,
            pair: KemKeyPair::from_seed(seed),
            signature,
        }
    }

    /// The prekey id.
    pub const fn id(&self) -> u32 {
        self.id
    }

    /// Whether this is the last-resort KEM prekey (reused) rather than a one-time one.
    pub const fn is_last_resort(&self) -> bool {
        self.last_resort
    }

    /// The public key.
    pub const fn public_key(&self) -> &KemPublicKey {
        self.pair.public()
    }

    /// The identity key's signature over [`kem_prekey_message`].
    pub const fn signature(&self) -> &Signature {
        &self.signature
    }

    /// The seed to store (the whole private key).
    pub const fn seed(&self) -> &SecretBytes<KEM_SEED_LEN> {
        self.pair.seed()
    }

    pub(crate) const fn key_pair(&self) -> &KemKeyPair {
        &self.pair
    }
}

impl fmt::Debug for KemPrekey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KemPrekey")
            .field("id", &self.id)
            .field("last_resort", &self.last_resort)
            .field("public", self.pair.public())
            .finish_non_exhaustive()
    }
}

/// A bundle's KEM prekey: id, public key and the identity key's signature over them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BundleKemPrekey {
    /// The KEM prekey id.
    pub id: u32,
    /// The ML-KEM-768 public key.
    pub key: KemPublicKey,
    /// The signature over [`kem_prekey_message`]`(id, key)`.
    pub signature: Signature,
}

/// What an initiator fetches to start a session: public keys only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrekeyBundle {
    identity_key: IdentityPublicKey,
    signed_prekey_id: u32,
    signed_prekey: X25519PublicKey,
    signature: Signature,
    one_time_prekey: Option<(u32, X25519PublicKey)>,
    kem_prekey: Option<BundleKemPrekey>,
}

impl PrekeyBundle {
    /// Assembles a bundle from its owner's keys. A post-quantum signed prekey needs a KEM
    /// prekey beside it: add it with [`PrekeyBundle::with_kem_prekey`].
    pub fn new(
        identity: &IdentityPublicKey,
        spk: &SignedPrekey,
        opk: Option<&OneTimePrekey>,
    ) -> Self {
        Self {
            identity_key: *identity,
            signed_prekey_id: spk.id,
            signed_prekey: *spk.public_key(),
            signature: spk.signature,
            one_time_prekey: opk.map(|k| (k.id, *k.public_key())),
            kem_prekey: None,
        }
    }

    /// The bundle with `kem` as its KEM prekey.
    #[must_use]
    pub fn with_kem_prekey(self, kem: &KemPrekey) -> Self {
        self.with_kem_public(BundleKemPrekey {
            id: kem.id,
            key: kem.public_key().clone(),
            signature: kem.signature,
        })
    }

    /// The bundle with a KEM prekey from public parts (as a relay stores them).
    #[must_use]
    pub fn with_kem_public(mut self, kem: BundleKemPrekey) -> Self {
        self.kem_prekey = Some(kem);
        self
    }

    /// The bundle without its KEM prekey (what a relay that strips it would hand out).
    #[must_use]
    pub fn without_kem_prekey(mut self) -> Self {
        self.kem_prekey = None;
        self
    }

    /// Assembles a bundle from public parts (as a relay's prekey directory stores them).
    pub const fn from_public_parts(
        identity_key: IdentityPublicKey,
        signed_prekey_id: u32,
        signed_prekey: X25519PublicKey,
        signature: Signature,
        one_time_prekey: Option<(u32, X25519PublicKey)>,
    ) -> Self {
        Self {
            identity_key,
            signed_prekey_id,
            signed_prekey,
            signature,
            one_time_prekey,
            kem_prekey: None,
        }
    }

    /// Checks the bundle's signatures under its identity key and returns the suite it offers.
    ///
    /// With a KEM prekey, the signed prekey must be signed for [`Suite::PostQuantum`] and the
    /// KEM prekey's signature must verify. Without one, the signed prekey must be signed for
    /// [`Suite::Classical`]; if it is signed for the post-quantum suite instead, its owner
    /// published a KEM prekey that someone removed ([`BundleError::KemPrekeyRemoved`]).
    pub fn verify(&self) -> Result<Suite, BundleError> {
        let spk_signed_for = |suite| {
            self.identity_key
                .verify(
                    &suite_signed_prekey_message(suite, self.signed_prekey_id, &self.signed_prekey),
                    &self.signature,
                )
                .is_ok()
        };
        match &self.kem_prekey {
            Some(kem) => {
                if !spk_signed_for(Suite::PostQuantum) {
                    return Err(BundleError::InvalidSignature);
                }
                self.identity_key
                    .verify(&kem_prekey_message(kem.id, &kem.key), &kem.signature)
                    .map_err(|_| BundleError::InvalidKemPrekeySignature)?;
                Ok(Suite::PostQuantum)
            }
            None if spk_signed_for(Suite::Classical) => Ok(Suite::Classical),
            None if spk_signed_for(Suite::PostQuantum) => Err(BundleError::KemPrekeyRemoved),
            None => Err(BundleError::InvalidSignature),
        }
    }

    /// The owner's identity key.
    pub const fn identity_key(&self) -> &IdentityPublicKey {
        &self.identity_key
    }

    /// The signed prekey's id.
    pub const fn signed_prekey_id(&self) -> u32 {
        self.signed_prekey_id
    }

    /// The signed prekey.
    pub const fn signed_prekey(&self) -> &X25519PublicKey {
        &self.signed_prekey
    }

    /// The signature over the signed prekey.
    pub const fn signature(&self) -> &Signature {
        &self.signature
    }

    /// The one-time prekey (id, key), if the bundle has one.
    pub const fn one_time_prekey(&self) -> Option<&(u32, X25519PublicKey)> {
        self.one_time_prekey.as_ref()
    }

    /// The KEM prekey, if the bundle has one.
    pub const fn kem_prekey(&self) -> Option<&BundleKemPrekey> {
        self.kem_prekey.as_ref()
    }

    /// Encodes the bundle (protobuf `hush.session.v1.PrekeyBundle`).
    pub fn to_bytes(&self) -> Vec<u8> {
        proto::PrekeyBundle {
            version: BUNDLE_VERSION,
            identity_key: self.identity_key.to_bytes().to_vec(),
            signed_prekey_id: self.signed_prekey_id,
            signed_prekey: self.signed_prekey.to_bytes().to_vec(),
            signed_prekey_signature: self.signature.to_bytes().to_vec(),
            one_time_prekey: self.one_time_prekey.map(|(id, key)| proto::OneTimePrekey {
                id,
                key: key.to_bytes().to_vec(),
            }),
            kem_prekey: self.kem_prekey.as_ref().map(|k| proto::KemPrekey {
                id: k.id,
                key: k.key.as_bytes().to_vec(),
                signature: k.signature.to_bytes().to_vec(),
            }),
        }
        .encode_to_vec()
    }

    /// Decodes a bundle. This does not verify the signature: see [`PrekeyBundle::verify`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let p: proto::PrekeyBundle = decode_strict(bytes)?;
        if p.version != BUNDLE_VERSION {
            return Err(DecodeError::UnsupportedVersion(p.version));
        }
        let one_time_prekey = match &p.one_time_prekey {
            Some(o) => Some((o.id, key32(&o.key, "one_time_prekey.key")?)),
            None => None,
        };
        let kem_prekey = match &p.kem_prekey {
            Some(k) => Some(BundleKemPrekey {
                id: k.id,
                key: kem_key(&k.key, "kem_prekey.key")?,
                signature: signature64(&k.signature, "kem_prekey.signature")?,
            }),
            None => None,
        };
        Ok(Self {
            identity_key: IdentityPublicKey::from_slice(&p.identity_key)?,
            signed_prekey_id: p.signed_prekey_id,
            signed_prekey: key32(&p.signed_prekey, "signed_prekey")?,
            signature: signature64(&p.signed_prekey_signature, "signed_prekey_signature")?,
            one_time_prekey,
            kem_prekey,
        })
    }
}
