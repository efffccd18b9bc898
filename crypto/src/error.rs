//! Error types, one per operation.

use thiserror::Error;

/// An identity public key could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key is not exactly 32 bytes.
    #[error("identity key must be 32 bytes")]
    InvalidLength,
    /// The bytes are not a canonical point on the Ed25519 curve.
    #[error("identity key is not a valid Ed25519 point")]
    InvalidEncoding,
    /// The point has small order, so it binds nothing, or has a small-order component
    /// (it is not in the prime-order subgroup).
    #[error("identity key is not of prime order")]
    WeakKey,
}

/// A signature did not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("signature verification failed")]
pub struct SignatureError;

/// A Diffie-Hellman agreement failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DhError {
    /// The peer's public key has low order: the shared secret would be all zero.
    #[error("X25519 result is all zero (non-contributory public key)")]
    NonContributory,
}

/// An HKDF output was requested past its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum KdfError {
    /// HKDF-SHA256 outputs at most 255 × 32 bytes.
    #[error("HKDF output of {len} bytes exceeds the maximum of {max}")]
    OutputTooLong {
        /// Requested length.
        len: usize,
        /// Largest allowed length.
        max: usize,
    },
}

/// AEAD encryption or decryption failed (for decryption: the tag did not verify).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("AEAD operation failed")]
pub struct AeadError;

/// A sealed blob could not be made or opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SealError {
    /// The blob is too short to hold a version, a salt and a tag.
    #[error("sealed blob is malformed")]
    Malformed,
    /// The blob's format byte is not one this version understands.
    #[error("sealed blob has unsupported format version {0}")]
    UnsupportedVersion(u8),
    /// Wrong key, wrong label, or the blob was altered.
    #[error("sealed blob failed to authenticate")]
    Decrypt,
    /// The plaintext exceeds ChaCha20-Poly1305's limit.
    #[error("plaintext too large to seal")]
    TooLarge,
}

/// An ML-KEM public key or ciphertext could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum KemError {
    /// Not 1,184 bytes (a public key) or 1,088 bytes (a ciphertext).
    #[error("ML-KEM key or ciphertext has the wrong length")]
    InvalidLength,
    /// The public key is not a canonical encoding (a coefficient is not below q).
    #[error("ML-KEM public key is not canonical")]
    InvalidKey,
}
