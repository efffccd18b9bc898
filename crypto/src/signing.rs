//! Ed25519 signing keys that are not identity keys (for example a group sender chain's key).

use core::fmt;

use ed25519_dalek::{SigningKey, VerifyingKey};
use rand_core::CryptoRng;

use crate::SecretBytes;
use crate::error::{KeyError, SignatureError};
use crate::identity::Signature;

/// Length of an encoded Ed25519 public key.
pub const SIGNING_KEY_LEN: usize = 32;

/// A validated Ed25519 public key: the canonical encoding (y < p) of a point that is not of
/// small order. Verification follows RFC 8032 with the strict rules of docs/SPEC.md §2.
#[derive(Clone, Copy)]
pub struct SigningPublicKey(VerifyingKey);

impl SigningPublicKey {
    /// Parses and validates a 32-byte Ed25519 public key.
    pub fn from_bytes(bytes: &[u8; SIGNING_KEY_LEN]) -> Result<Self, KeyError> {
        let key = VerifyingKey::from_bytes(bytes).map_err(|_| KeyError::InvalidEncoding)?;
        // Only the canonical encoding (y < p) of a point is accepted, so every key has one form.
        if key.to_edwards().compress().as_bytes() != bytes {
            return Err(KeyError::InvalidEncoding);
        }
        // Prime order only: no small-order point, and no honest key plus a small-order
        // component (which would give one key several equivalent forms).
        if key.is_weak() || !key.to_edwards().is_torsion_free() {
            return Err(KeyError::WeakKey);
        }
        Ok(Self(key))
    }

    /// Parses a key from a slice, which must be exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, KeyError> {
        let arr: &[u8; SIGNING_KEY_LEN] = bytes.try_into().map_err(|_| KeyError::InvalidLength)?;
        Self::from_bytes(arr)
    }

    pub(crate) const fn from_verifying_key(key: VerifyingKey) -> Self {
        Self(key)
    }

    pub(crate) const fn verifying_key(&self) -> &VerifyingKey {
        &self.0
    }

    /// The 32-byte encoding.
    pub fn to_bytes(&self) -> [u8; SIGNING_KEY_LEN] {
        self.0.to_bytes()
    }

    /// The 32-byte encoding, borrowed.
    pub fn as_bytes(&self) -> &[u8; SIGNING_KEY_LEN] {
        self.0.as_bytes()
    }

    /// Verifies an Ed25519 signature (strict: canonical S, no small-order R).
    pub fn verify(&self, message: &[u8], signature: &Signature) -> Result<(), SignatureError> {
        let sig = ed25519_dalek::Signature::from_bytes(signature.as_bytes());
        self.0
            .verify_strict(message, &sig)
            .map_err(|_| SignatureError)
    }
}

impl PartialEq for SigningPublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_bytes() == other.0.as_bytes()
    }
}

impl Eq for SigningPublicKey {}

impl core::hash::Hash for SigningPublicKey {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        self.0.as_bytes().hash(state);
    }
}

impl fmt::Debug for SigningPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningPublicKey(")?;
        crate::fmt_hex(f, self.0.as_bytes())?;
        f.write_str(")")
    }
}

/// An Ed25519 signing key pair.
pub struct SigningKeyPair {
    key: SigningKey,
    public: SigningPublicKey,
}

impl SigningKeyPair {
    /// Generates a fresh key pair.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        Self::from_seed(&SecretBytes::random(rng))
    }

    /// Rebuilds a key pair from its 32-byte seed.
    pub fn from_seed(seed: &SecretBytes<32>) -> Self {
        let key = SigningKey::from_bytes(seed.expose());
        let public = SigningPublicKey(key.verifying_key());
        Self { key, public }
    }

    /// The 32-byte seed, for storage.
    pub fn seed(&self) -> SecretBytes<32> {
        SecretBytes::from_bytes(self.key.to_bytes())
    }

    /// The public key.
    pub const fn public(&self) -> &SigningPublicKey {
        &self.public
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> Signature {
        use ed25519_dalek::Signer;
        Signature::from_bytes(self.key.sign(message).to_bytes())
    }
}

impl fmt::Debug for SigningKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKeyPair")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn sign_verify_and_debug() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(30);
        let k = SigningKeyPair::generate(&mut rng);
        let sig = k.sign(b"m");
        k.public().verify(b"m", &sig).unwrap();
        assert_eq!(k.public().verify(b"n", &sig), Err(SignatureError));
        let again = SigningKeyPair::from_seed(&k.seed());
        assert_eq!(again.public(), k.public());
        let parsed = SigningPublicKey::from_bytes(k.public().as_bytes()).unwrap();
        assert_eq!(&parsed, k.public());
        let d = format!("{k:?}");
        assert!(!d.contains(&crate::to_hex(k.seed().expose())));
        assert!(d.contains(&crate::to_hex(k.public().as_bytes())));
    }
}
