//! # hush-crypto
//!
//! The only hush crate that touches cryptographic primitives. Everything above it
//! (sessions, groups, client, relay) goes through these types:
//!
//! * [`IdentityKeyPair`] / [`IdentityPublicKey`]: Ed25519 identities whose X25519 form
//!   (the birational map, as libsodium) also does Diffie-Hellman;
//! * [`X25519KeyPair`], [`EphemeralKeyPair`]: X25519 that rejects all-zero results;
//! * [`kdf`]: HKDF-SHA256, HMAC-SHA256 and the chain-key step;
//! * [`kem`]: ML-KEM-768 (FIPS 203), the post-quantum key encapsulation;
//! * [`MessageKeys`]: ChaCha20-Poly1305 keyed from a message key;
//! * [`attachment`]: chunked ChaCha20-Poly1305 for files;
//! * [`StorageKey`]: sealing state at rest;
//! * [`SigningKeyPair`]: Ed25519 keys that are not identities (group sender chains);
//! * [`hash::sha256`]: digests of public data;
//! * [`franking`]: commitments and relay tags for verifiable abuse reports;
//! * [`SafetyNumber`]: fingerprints for out-of-band verification;
//! * [`labels`]: every label of the protocol, in one place.
//!
//! Secrets ([`SecretBytes`] and every type holding one) zeroize on drop, compare in
//! constant time, implement neither `Clone` nor `Copy`, and never print their bytes.
//!
//! ```
//! use hush_crypto::{IdentityKeyPair, X25519KeyPair, EphemeralKeyPair, MessageKeys,
//!                   SafetyNumber, StorageKey, kdf};
//!
//! let mut rng = rand::rng();
//! let alice = IdentityKeyPair::generate(&mut rng);
//! let bob = IdentityKeyPair::generate(&mut rng);
//!
//! // Bob publishes a signed X25519 prekey; Alice checks the signature.
//! let prekey = X25519KeyPair::generate(&mut rng);
//! let signature = bob.sign(prekey.public().as_bytes());
//! bob.public().verify(prekey.public().as_bytes(), &signature)?;
//!
//! // Alice agrees a secret with an ephemeral key; Bob gets the same one.
//! let ephemeral = EphemeralKeyPair::generate(&mut rng);
//! let ephemeral_public = *ephemeral.public();
//! let alice_dh = ephemeral.agree(&[prekey.public()])?;
//! let bob_dh = prekey.diffie_hellman(&ephemeral_public)?;
//! assert_eq!(alice_dh[0].expose(), bob_dh.expose());
//!
//! // Derive a chain key, step it, and encrypt one message.
//! let chain_key = kdf::hkdf_sha256::<32>(&[0; 32], bob_dh.expose(), b"example");
//! let (message_key, _next_chain_key) = kdf::chain_step(&chain_key);
//! let keys = MessageKeys::derive(&message_key, b"example message");
//! let ciphertext = keys.seal(b"header", b"hello Bob")?;
//! assert_eq!(keys.open(b"header", &ciphertext)?, b"hello Bob");
//!
//! // Seal state at rest, and compare safety numbers.
//! let storage = StorageKey::generate(&mut rng);
//! let blob = storage.seal(b"note", b"state", &mut rng)?;
//! assert_eq!(&**storage.open(b"note", &blob)?, b"state");
//! let number = SafetyNumber::compute((b"alice", alice.public()), (b"bob", bob.public()));
//! assert_eq!(number.digits().len(), 60);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]

pub mod aead;
pub mod attachment;
pub mod error;
pub mod franking;
pub mod hash;
pub mod identity;
pub mod kdf;
pub mod kem;
pub mod labels;
pub mod safety_number;
pub mod seal;
mod secret;
pub mod signing;
pub mod x25519;

pub use aead::MessageKeys;
pub use error::{AeadError, DhError, KdfError, KemError, KeyError, SealError, SignatureError};
pub use identity::{IdentityKeyPair, IdentityPublicKey, Signature};
pub use safety_number::SafetyNumber;
pub use seal::StorageKey;
pub use secret::SecretBytes;
pub use signing::{SigningKeyPair, SigningPublicKey};
pub use x25519::{EphemeralKeyPair, SharedSecret, X25519KeyPair, X25519PublicKey};

/// Re-exported so callers can name the RNG bounds without depending on `rand_core` directly.
pub use rand_core::{CryptoRng, Rng};

/// Re-exported so callers can zeroize buffers and wrap them without a direct dependency.
pub use zeroize::{Zeroize, Zeroizing};

/// Compares two byte strings in constant time (for equal lengths; the length is not secret).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

pub(crate) fn fmt_hex(f: &mut core::fmt::Formatter<'_>, bytes: &[u8]) -> core::fmt::Result {
    bytes.iter().try_for_each(|b| write!(f, "{b:02x}"))
}

#[cfg(test)]
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
