//! Error types, one per operation. None of their texts contain key material or plaintext.

use hush_crypto::{KeyError, X25519PublicKey};
use thiserror::Error;

use crate::IdentityPublicKey;

/// Bytes could not be decoded as a hush wire message or bundle.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input is longer than the decoder accepts.
    #[error("input of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Input length.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// The bytes are not valid protobuf for the expected message.
    #[error("malformed protobuf")]
    Protobuf,
    /// The bytes decode, but are not the one canonical encoding of their content.
    #[error("non-canonical encoding")]
    NonCanonical,
    /// A required field is absent.
    #[error("missing field {0}")]
    MissingField(&'static str),
    /// A key or signature field has the wrong length.
    #[error("field {field} has length {len}, expected {expected}")]
    BadLength {
        /// The field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The required length.
        expected: usize,
    },
    /// A KEM public key is not the canonical encoding of an ML-KEM-768 key (a coefficient
    /// is not below q).
    #[error("field {0} is not a valid ML-KEM-768 public key")]
    InvalidKemKey(&'static str),
    /// An identity key is not a valid Ed25519 key.
    #[error("invalid identity key: {0}")]
    IdentityKey(#[from] KeyError),
    /// The message version is not one this library speaks.
    #[error("unsupported version {0}")]
    UnsupportedVersion(u32),
    /// A number field is outside its range.
    #[error("field {0} is out of range")]
    OutOfRange(&'static str),
}

/// A prekey bundle was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum BundleError {
    /// The signed prekey's signature does not verify under the bundle's identity key (for
    /// the suite the bundle offers).
    #[error("signed prekey signature is invalid")]
    InvalidSignature,
    /// The KEM prekey's signature does not verify under the bundle's identity key.
    #[error("KEM prekey signature is invalid")]
    InvalidKemPrekeySignature,
    /// The signed prekey was signed for the post-quantum suite, but the bundle has no KEM
    /// prekey: it was removed on the way (a downgrade attempt).
    #[error("the bundle's KEM prekey was removed")]
    KemPrekeyRemoved,
}

/// A peer presented an identity key other than the one the caller trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityChange {
    /// The identity the caller expected.
    pub known: IdentityPublicKey,
    /// The identity the peer presented.
    pub received: IdentityPublicKey,
}

/// A session could not be started from a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum InitError {
    /// The bundle failed verification.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// The peer's identity key differs from the one the caller knows. The caller must decide
    /// whether to trust the new key (for example after comparing safety numbers) and call
    /// again with it as the known key.
    #[error("peer identity key changed")]
    IdentityChanged(Box<IdentityChange>),
    /// A prekey in the bundle has low order.
    #[error("bundle contains a non-contributory key")]
    NonContributory,
    /// The bundle offers only the classical suite and the caller's policy requires
    /// post-quantum ([`SuitePolicy::PostQuantumOnly`](crate::SuitePolicy::PostQuantumOnly)).
    #[error("the bundle offers no post-quantum key agreement and the policy requires one")]
    ClassicalRefused,
}

/// An incoming prekey message could not start a session.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum AcceptError {
    /// The initiator's identity key differs from the one the caller knows.
    #[error("peer identity key changed")]
    IdentityChanged(Box<IdentityChange>),
    /// The signed prekey passed in is not the one the message names.
    #[error("message names signed prekey {expected}, got {got}")]
    WrongSignedPrekey {
        /// The id in the message.
        expected: u32,
        /// The id of the key passed in.
        got: u32,
    },
    /// The message names a one-time prekey, and the caller passed none or another.
    #[error("one-time prekey {0:?} is not available")]
    MissingOneTimePrekey(Option<u32>),
    /// The message names a KEM prekey, and the caller passed none or another (a one-time
    /// KEM prekey is deleted after its first session, so a replay names one that is gone).
    #[error("KEM prekey {0} is not available")]
    MissingKemPrekey(u32),
    /// An X3DH message (no KEM ciphertext) names a signed prekey signed for the
    /// post-quantum suite, whose bundles always carry a KEM prekey: a downgrade.
    #[error("a classical prekey message names a post-quantum signed prekey")]
    ClassicalRefused,
    /// The message's base key has low order.
    #[error("base key is non-contributory")]
    NonContributory,
    /// The inner message failed to decrypt.
    #[error(transparent)]
    Decrypt(#[from] DecryptError),
}

/// Encryption failed. The session is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EncryptError {
    /// The plaintext exceeds [`MAX_PLAINTEXT_LEN`](crate::limits::MAX_PLAINTEXT_LEN).
    #[error("plaintext of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Plaintext length.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// The sending chain has used every message number (2^32).
    #[error("sending chain exhausted")]
    ChainExhausted,
    /// Completing a received DH ratchet step gave the all-zero agreement. Cannot happen: the
    /// peer's key passed the same check on receipt.
    #[error("ratchet key is non-contributory")]
    InvalidRatchetKey,
}

/// Decryption failed. The session is byte-for-byte unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecryptError {
    /// The bytes are not a well-formed message.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// This message was already decrypted (or its key was evicted as too old).
    #[error("duplicate message")]
    Duplicate,
    /// The message would make a chain skip more keys than allowed.
    #[error("message is {gap} keys ahead; the limit is {max}")]
    TooFarAhead {
        /// Keys that would be skipped.
        gap: u32,
        /// [`MAX_MESSAGE_GAP`](crate::limits::MAX_MESSAGE_GAP).
        max: u32,
    },
    /// The message failed authentication: tampered, or not for this session.
    #[error("message failed authentication")]
    Authentication,
    /// A prekey message that belongs to another session (different X3DH base key).
    #[error("prekey message belongs to another session")]
    WrongSession,
    /// The header's ratchet key has low order.
    #[error("ratchet key is non-contributory")]
    InvalidRatchetKey(X25519PublicKey),
    /// The post-quantum ratchet refused the message (SPEC §7.8.6).
    #[error(transparent)]
    PostQuantum(#[from] PqError),
}

/// The post-quantum ratchet refused a message (SPEC §7.8.6). The session is unchanged.
/// [`PqError::Missing`] is found before authentication (like a decoding error); the others
/// only in an authentic message, so only a peer that breaks the protocol causes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum PqError {
    /// The session runs the post-quantum ratchet and the header has no post-quantum part (a
    /// downgrade), or the reverse.
    #[error("the header's post-quantum part does not match the session's suite")]
    Missing,
    /// The peer claims an epoch it cannot have reached.
    #[error("peer in post-quantum epoch {theirs}, ours is {ours}")]
    EpochAhead {
        /// Our epoch.
        ours: u32,
        /// The epoch in the header.
        theirs: u32,
    },
    /// A chunk arrived where the peer has nothing to send.
    #[error("unexpected post-quantum chunk")]
    UnexpectedChunk,
    /// The assembled key or ciphertext is malformed (nonzero padding, or a key that fails
    /// the ML-KEM modulus check).
    #[error("assembled post-quantum payload is invalid")]
    InvalidPayload,
    /// The epoch counter would overflow (after 2^32 - 1 epochs).
    #[error("post-quantum epochs exhausted")]
    EpochsExhausted,
}

/// A stored session could not be restored.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum StateError {
    /// The sealed blob did not open.
    #[error(transparent)]
    Seal(#[from] hush_crypto::SealError),
    /// The state is malformed or violates a limit.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The state version is not one this library reads.
    #[error("unsupported state version {0}")]
    UnsupportedVersion(u32),
}
