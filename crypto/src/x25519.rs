//! X25519 Diffie-Hellman with contributory-behaviour checks.

use core::fmt;

use rand_core::CryptoRng;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroize;

use crate::SecretBytes;
use crate::error::DhError;

/// Length in bytes of an X25519 public key, private key or shared secret.
pub const X25519_LEN: usize = 32;

/// An X25519 public key: 32 bytes, the u-coordinate in little-endian (RFC 7748).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct X25519PublicKey([u8; X25519_LEN]);

impl X25519PublicKey {
    /// Wraps 32 bytes. Every 32-byte string is a valid X25519 public key encoding; low-order
    /// points are caught later, when a Diffie-Hellman result is all zero.
    pub const fn from_bytes(bytes: [u8; X25519_LEN]) -> Self {
        Self(bytes)
    }

    /// Copies a public key out of a slice of exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        Some(Self(bytes.try_into().ok()?))
    }

    /// The 32-byte encoding.
    pub const fn as_bytes(&self) -> &[u8; X25519_LEN] {
        &self.0
    }

    /// The 32-byte encoding, by value.
    pub const fn to_bytes(self) -> [u8; X25519_LEN] {
        self.0
    }
}

impl fmt::Debug for X25519PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "X25519PublicKey(")?;
        crate::fmt_hex(f, &self.0)?;
        write!(f, ")")
    }
}

/// The output of an X25519 agreement that was checked to be contributory (not all zero).
pub struct SharedSecret(SecretBytes<X25519_LEN>);

impl SharedSecret {
    /// The 32 shared bytes.
    pub const fn expose(&self) -> &[u8; X25519_LEN] {
        self.0.expose()
    }
}

impl fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SharedSecret(redacted)")
    }
}

fn agree(secret: &StaticSecret, public: &X25519PublicKey) -> Result<SharedSecret, DhError> {
    let shared = secret.diffie_hellman(&PublicKey::from(public.0));
    if !shared.was_contributory() {
        return Err(DhError::NonContributory);
    }
    Ok(SharedSecret(SecretBytes::from_bytes(shared.to_bytes())))
}

/// A reusable X25519 key pair (ratchet keys, signed prekeys, one-time prekeys).
///
/// The public key is computed once and cached, so sending on an existing chain never pays
/// for a base-point multiplication.
pub struct X25519KeyPair {
    secret: StaticSecret,
    public: X25519PublicKey,
}

impl X25519KeyPair {
    /// Generates a fresh key pair.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut bytes = SecretBytes::<X25519_LEN>::random(rng);
        Self::from_secret(&mut bytes)
    }

    /// Rebuilds a key pair from its 32-byte private key (as stored by [`Self::secret_bytes`]).
    pub fn from_secret_bytes(secret: &SecretBytes<X25519_LEN>) -> Self {
        let secret = StaticSecret::from(*secret.expose());
        let public = X25519PublicKey(PublicKey::from(&secret).to_bytes());
        Self { secret, public }
    }

    fn from_secret(secret: &mut SecretBytes<X25519_LEN>) -> Self {
        let pair = Self::from_secret_bytes(secret);
        secret.zeroize();
        pair
    }

    /// An explicit copy of the key pair (secret and cached public key), without recomputing
    /// the public key.
    pub fn duplicate(&self) -> Self {
        Self {
            secret: self.secret.clone(),
            public: self.public,
        }
    }

    /// The private key bytes, for serialization of protocol state.
    pub fn secret_bytes(&self) -> SecretBytes<X25519_LEN> {
        SecretBytes::from_bytes(self.secret.to_bytes())
    }

    /// The cached public key.
    pub const fn public(&self) -> &X25519PublicKey {
        &self.public
    }

    /// X25519 with `their_public`; an all-zero result is rejected.
    pub fn diffie_hellman(&self, their_public: &X25519PublicKey) -> Result<SharedSecret, DhError> {
        agree(&self.secret, their_public)
    }
}

impl fmt::Debug for X25519KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("X25519KeyPair")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

/// A single-use X25519 key pair (the X3DH ephemeral key).
///
/// The only way to use the secret is [`EphemeralKeyPair::agree`], which consumes it.
pub struct EphemeralKeyPair(X25519KeyPair);

impl EphemeralKeyPair {
    /// Generates a fresh ephemeral key pair.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        Self(X25519KeyPair::generate(rng))
    }

    /// The public key, to send to the peer.
    pub const fn public(&self) -> &X25519PublicKey {
        self.0.public()
    }

    /// Performs one agreement with each of `their_publics`, in order, and destroys the secret.
    pub fn agree(self, their_publics: &[&X25519PublicKey]) -> Result<Vec<SharedSecret>, DhError> {
        their_publics
            .iter()
            .map(|p| self.0.diffie_hellman(p))
            .collect()
    }
}

impl fmt::Debug for EphemeralKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EphemeralKeyPair")
            .field("public", self.public())
            .finish_non_exhaustive()
    }
}

/// X25519 on raw bytes with the all-zero check, for known-answer tests.
pub fn x25519(
    secret: &SecretBytes<X25519_LEN>,
    their_public: &X25519PublicKey,
) -> Result<SharedSecret, DhError> {
    agree(&StaticSecret::from(*secret.expose()), their_public)
}

/// X25519 between an already-built static secret and a public key (used by identity keys).
pub(crate) fn agree_static(
    secret: &StaticSecret,
    public: &X25519PublicKey,
) -> Result<SharedSecret, DhError> {
    agree(secret, public)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn agreement_is_symmetric() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let a = X25519KeyPair::generate(&mut rng);
        let b = X25519KeyPair::generate(&mut rng);
        let ab = a.diffie_hellman(b.public()).unwrap();
        let ba = b.diffie_hellman(a.public()).unwrap();
        assert_eq!(ab.expose(), ba.expose());
    }

    #[test]
    fn rejects_low_order_point() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let a = X25519KeyPair::generate(&mut rng);
        // u = 0 and u = 1 are low-order points: the result is all zero.
        for u in [[0u8; 32], {
            let mut one = [0u8; 32];
            one[0] = 1;
            one
        }] {
            assert_eq!(
                a.diffie_hellman(&X25519PublicKey::from_bytes(u))
                    .unwrap_err(),
                DhError::NonContributory
            );
        }
    }

    #[test]
    fn debug_hides_secret() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let a = X25519KeyPair::generate(&mut rng);
        let secret_hex = crate::to_hex(a.secret_bytes().expose());
        let d = format!("{a:?}");
        assert!(!d.contains(&secret_hex));
        let e = EphemeralKeyPair::generate(&mut rng);
        assert!(format!("{e:?}").contains("EphemeralKeyPair"));
        let s = a.diffie_hellman(e.public()).unwrap();
        assert!(!format!("{s:?}").contains(&crate::to_hex(s.expose())));
    }

    #[test]
    fn round_trips_secret_bytes() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(4);
        let a = X25519KeyPair::generate(&mut rng);
        let b = X25519KeyPair::from_secret_bytes(&a.secret_bytes());
        assert_eq!(a.public(), b.public());
    }
}
