//! Prekeys and prekey bundles.

use core::fmt;

use hush_crypto::{
    CryptoRng, IdentityKeyPair, IdentityPublicKey, SecretBytes, Signature, X25519KeyPair,
    X25519PublicKey,
};
use prost::Message as _;

use crate::error::{BundleError, DecodeError};
use crate::message::{decode_strict, key32, signature64};
use crate::proto;

/// Version of the prekey bundle encoding.
pub const BUNDLE_VERSION: u32 = 1;

/// Prefix of the message an identity key signs to certify a signed prekey:
/// `"hush signed prekey v1" ‖ id (u32, big-endian) ‖ prekey (32 bytes)`.
pub const SIGNED_PREKEY_CONTEXT: &[u8] = hush_crypto::labels::SIGNED_PREKEY_CONTEXT;

/// The exact bytes signed for signed prekey `id` with public key `key`.
pub fn signed_prekey_message(id: u32, key: &X25519PublicKey) -> Vec<u8> {
    let mut m = Vec::with_capacity(SIGNED_PREKEY_CONTEXT.len() + 4 + 32);
    m.extend_from_slice(SIGNED_PREKEY_CONTEXT);
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(key.as_bytes());
    m
}

/// A signed prekey with its private key, kept by its owner.
pub struct SignedPrekey {
    id: u32,
    pair: X25519KeyPair,
    signature: Signature,
}

impl SignedPrekey {
    /// Generates signed prekey `id` and signs it with `identity`.
    pub fn generate<R: CryptoRng + ?Sized>(
        id: u32,
        identity: &IdentityKeyPair,
        rng: &mut R,
    ) -> Self {
        let pair = X25519KeyPair::generate(rng);
        let signature = identity.sign(&signed_prekey_message(id, pair.public()));
        Self {
            id,
            pair,
            signature,
        }
    }

    /// Rebuilds a stored signed prekey.
    pub fn from_parts(id: u32, secret: &SecretBytes<32>, signature: Signature) -> Self {
        Self {
            id,
            pair: X25519KeyPair::from_secret_bytes(secret),
            signature,
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

/// What an initiator fetches to start a session: public keys only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrekeyBundle {
    identity_key: IdentityPublicKey,
    signed_prekey_id: u32,
    signed_prekey: X25519PublicKey,
    signature: Signature,
    one_time_prekey: Option<(u32, X25519PublicKey)>,
}

impl PrekeyBundle {
    /// Assembles a bundle from its owner's keys.
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
        }
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
        }
    }

    /// Checks the signed prekey's signature under the bundle's identity key.
    pub fn verify(&self) -> Result<(), BundleError> {
        self.identity_key
            .verify(
                &signed_prekey_message(self.signed_prekey_id, &self.signed_prekey),
                &self.signature,
            )
            .map_err(|_| BundleError::InvalidSignature)
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
        Ok(Self {
            identity_key: IdentityPublicKey::from_slice(&p.identity_key)?,
            signed_prekey_id: p.signed_prekey_id,
            signed_prekey: key32(&p.signed_prekey, "signed_prekey")?,
            signature: signature64(&p.signed_prekey_signature, "signed_prekey_signature")?,
            one_time_prekey,
        })
    }
}
