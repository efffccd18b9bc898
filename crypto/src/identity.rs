//! Ed25519 identity keys that also do X25519.
//!
//! One identity key both signs and agrees keys. Its X25519 form is the birational map from
//! the Edwards curve to the Montgomery curve, as libsodium's
//! `crypto_sign_ed25519_pk_to_curve25519` / `crypto_sign_ed25519_sk_to_curve25519`:
//! the public key is `u = (1 + y) / (1 - y) mod p`, the private scalar is the first 32 bytes
//! of `SHA-512(seed)` (clamped by X25519 as usual).

use core::fmt;

use ed25519_dalek::SigningKey;
use rand_core::CryptoRng;
use x25519_dalek::StaticSecret;
use zeroize::Zeroize;

use crate::SecretBytes;
use crate::error::{DhError, KeyError, SignatureError};
use crate::signing::SigningPublicKey;
use crate::x25519::{SharedSecret, X25519PublicKey, agree_static};

/// Length of an encoded identity public key (an Ed25519 public key).
pub const IDENTITY_KEY_LEN: usize = 32;
/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// An Ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature([u8; SIGNATURE_LEN]);

impl Signature {
    /// Wraps 64 signature bytes (R ‖ S).
    pub const fn from_bytes(bytes: [u8; SIGNATURE_LEN]) -> Self {
        Self(bytes)
    }

    /// Copies a signature out of a slice of exactly 64 bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        Some(Self(bytes.try_into().ok()?))
    }

    /// The 64-byte encoding.
    pub const fn to_bytes(self) -> [u8; SIGNATURE_LEN] {
        self.0
    }

    /// The 64-byte encoding, borrowed.
    pub const fn as_bytes(&self) -> &[u8; SIGNATURE_LEN] {
        &self.0
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Signature(")?;
        crate::fmt_hex(f, &self.0)?;
        f.write_str(")")
    }
}

/// A verified identity public key: a canonical Ed25519 point that is not of small order,
/// together with its cached X25519 form.
#[derive(Clone, Copy)]
pub struct IdentityPublicKey {
    ed: SigningPublicKey,
    x: X25519PublicKey,
}

impl IdentityPublicKey {
    /// Parses and validates a 32-byte Ed25519 public key: a canonical encoding (y < p) of a
    /// point on the curve that is not of small order.
    pub fn from_bytes(bytes: &[u8; IDENTITY_KEY_LEN]) -> Result<Self, KeyError> {
        Ok(Self::from_signing_key(SigningPublicKey::from_bytes(bytes)?))
    }

    /// Parses a key from a slice, which must be exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, KeyError> {
        let arr: &[u8; IDENTITY_KEY_LEN] = bytes.try_into().map_err(|_| KeyError::InvalidLength)?;
        Self::from_bytes(arr)
    }

    fn from_signing_key(ed: SigningPublicKey) -> Self {
        let x = X25519PublicKey::from_bytes(ed.verifying_key().to_montgomery().to_bytes());
        Self { ed, x }
    }

    /// The Ed25519 public key, for verifying signatures.
    pub const fn signing_key(&self) -> &SigningPublicKey {
        &self.ed
    }

    /// The 32-byte Ed25519 encoding. This is `Encode(IK)` in the specification.
    pub fn to_bytes(&self) -> [u8; IDENTITY_KEY_LEN] {
        self.ed.to_bytes()
    }

    /// The 32-byte Ed25519 encoding, borrowed.
    pub fn as_bytes(&self) -> &[u8; IDENTITY_KEY_LEN] {
        self.ed.as_bytes()
    }

    /// The X25519 form of this key (the birational map to Montgomery u).
    pub const fn to_x25519(&self) -> &X25519PublicKey {
        &self.x
    }

    /// Verifies an Ed25519 signature (strict rules: docs/SPEC.md §2).
    pub fn verify(&self, message: &[u8], signature: &Signature) -> Result<(), SignatureError> {
        self.ed.verify(message, signature)
    }
}

impl PartialEq for IdentityPublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.ed.as_bytes() == other.ed.as_bytes()
    }
}

impl Eq for IdentityPublicKey {}

impl core::hash::Hash for IdentityPublicKey {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        self.ed.as_bytes().hash(state);
    }
}

impl fmt::Debug for IdentityPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IdentityPublicKey(")?;
        crate::fmt_hex(f, self.ed.as_bytes())?;
        f.write_str(")")
    }
}

/// A device's long-term identity: an Ed25519 signing key and its X25519 form.
pub struct IdentityKeyPair {
    signing: SigningKey,
    x_secret: StaticSecret,
    public: IdentityPublicKey,
}

impl IdentityKeyPair {
    /// Generates a fresh identity from a cryptographic RNG.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        Self::from_seed(&SecretBytes::random(rng))
    }

    /// Rebuilds an identity from its 32-byte Ed25519 seed.
    pub fn from_seed(seed: &SecretBytes<32>) -> Self {
        let signing = SigningKey::from_bytes(seed.expose());
        let mut scalar = signing.to_scalar_bytes();
        let x_secret = StaticSecret::from(scalar);
        scalar.zeroize();
        let public = IdentityPublicKey::from_signing_key(SigningPublicKey::from_verifying_key(
            signing.verifying_key(),
        ));
        Self {
            signing,
            x_secret,
            public,
        }
    }

    /// The 32-byte Ed25519 seed, for storage.
    pub fn seed(&self) -> SecretBytes<32> {
        SecretBytes::from_bytes(self.signing.to_bytes())
    }

    /// The X25519 private scalar of this identity, `SHA-512(seed)[0..32]` before clamping,
    /// for test vectors and interoperability checks.
    pub fn x25519_secret(&self) -> SecretBytes<32> {
        SecretBytes::from_bytes(self.x_secret.to_bytes())
    }

    /// The public half.
    pub const fn public(&self) -> &IdentityPublicKey {
        &self.public
    }

    /// Signs `message` with Ed25519.
    pub fn sign(&self, message: &[u8]) -> Signature {
        use ed25519_dalek::Signer;
        Signature(self.signing.sign(message).to_bytes())
    }

    /// X25519 between this identity's Montgomery form and `their_public`.
    pub fn diffie_hellman(&self, their_public: &X25519PublicKey) -> Result<SharedSecret, DhError> {
        agree_static(&self.x_secret, their_public)
    }
}

impl fmt::Debug for IdentityKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityKeyPair")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::x25519::X25519KeyPair;
    use rand::SeedableRng;

    #[test]
    fn identity_dh_matches_its_x25519_form() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(10);
        let id = IdentityKeyPair::generate(&mut rng);
        let other = X25519KeyPair::generate(&mut rng);
        let a = id.diffie_hellman(other.public()).unwrap();
        let b = other.diffie_hellman(id.public().to_x25519()).unwrap();
        assert_eq!(a.expose(), b.expose());
    }

    #[test]
    fn libsodium_conversion_vector() {
        // libsodium test/default/ed25519_convert.c: seed 4242...42 repeated.
        let seed: [u8; 32] =
            hex::decode("421151a459faeade3d247115f94aedae42318124095afabe4d1451a559faedee")
                .unwrap()
                .try_into()
                .unwrap();
        let id = IdentityKeyPair::from_seed(&SecretBytes::from_bytes(seed));
        assert_eq!(
            hex::encode(id.public().to_x25519().as_bytes()),
            "f1814f0e8ff1043d8a44d25babff3cedcae6c22c3edaa48f857ae70de2baae50"
        );
        // libsodium returns the clamped scalar; X25519 clamps on use, so compare clamped.
        let mut scalar = id.x_secret.to_bytes();
        scalar[0] &= 248;
        scalar[31] &= 127;
        scalar[31] |= 64;
        assert_eq!(
            hex::encode(scalar),
            "8052030376d47112be7f73ed7a019293dd12ad910b654455798b4667d73de166"
        );
    }

    #[test]
    fn sign_and_verify() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let id = IdentityKeyPair::generate(&mut rng);
        let sig = id.sign(b"hello");
        id.public().verify(b"hello", &sig).unwrap();
        assert_eq!(id.public().verify(b"hellp", &sig), Err(SignatureError));
        let mut bad = sig.to_bytes();
        bad[5] ^= 1;
        assert_eq!(
            id.public().verify(b"hello", &Signature::from_bytes(bad)),
            Err(SignatureError)
        );
    }

    #[test]
    fn rejects_keys_with_a_torsion_component() {
        use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
        use curve25519_dalek::scalar::Scalar;
        let honest = ED25519_BASEPOINT_POINT * Scalar::from(12345u64);
        assert!(IdentityPublicKey::from_bytes(honest.compress().as_bytes()).is_ok());
        // The same key plus a point of order 8: canonical, not itself of small order, but
        // not in the prime-order subgroup.
        let mixed = (honest + EIGHT_TORSION[1]).compress();
        assert_eq!(
            hex::encode(mixed.as_bytes()),
            "40a4cf5c611d737a2f1c6fcca84d9cabfed80987f186a5a6c57e629bff1af27f",
            "the key in test-vectors/vectors/identity.json"
        );
        assert_eq!(
            IdentityPublicKey::from_bytes(mixed.as_bytes()).unwrap_err(),
            KeyError::WeakKey
        );
        assert!(crate::SigningPublicKey::from_bytes(mixed.as_bytes()).is_err());
    }

    #[test]
    fn rejects_weak_and_invalid_keys() {
        // The identity point (y = 1) has small order.
        let mut ident = [0u8; 32];
        ident[0] = 1;
        assert_eq!(
            IdentityPublicKey::from_bytes(&ident).unwrap_err(),
            KeyError::WeakKey
        );
        assert_eq!(
            IdentityPublicKey::from_slice(&[1u8; 31]).unwrap_err(),
            KeyError::InvalidLength
        );
        // y = p + 1 is a non-canonical encoding of y = 1 (the small-order identity point)...
        let mut p_plus_1 = [0xffu8; 32];
        p_plus_1[0] = 0xee;
        p_plus_1[31] = 0x7f;
        assert_eq!(
            IdentityPublicKey::from_bytes(&p_plus_1).unwrap_err(),
            KeyError::InvalidEncoding
        );
        // y = 2 is not on the curve.
        let mut two = [0u8; 32];
        two[0] = 2;
        assert_eq!(
            IdentityPublicKey::from_bytes(&two).unwrap_err(),
            KeyError::InvalidEncoding
        );
    }

    #[test]
    fn seed_round_trip_and_debug() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(12);
        let id = IdentityKeyPair::generate(&mut rng);
        let again = IdentityKeyPair::from_seed(&id.seed());
        assert_eq!(id.public(), again.public());
        let d = format!("{id:?}");
        assert!(!d.contains(&crate::to_hex(id.seed().expose())));
        assert!(!d.contains(&crate::to_hex(&id.x_secret.to_bytes())));
        assert!(d.contains(&crate::to_hex(id.public().as_bytes())));
    }
}
