//! Errors of the client SDK. None carries key material or message content.

use crate::proto::relay::ErrorCode;

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The on-device database failed.
    #[error("store: {0}")]
    Store(String),
    /// Stored state did not open under the storage key (wrong key, or tampered with).
    #[error("stored state does not open under this storage key")]
    Sealed,
    /// The operation needs the relay and the client is not connected.
    #[error("not connected to the relay")]
    Offline,
    /// The relay refused a request.
    #[error("relay refused ({code:?}): {message}")]
    Relay {
        /// The relay's error code.
        code: ErrorCode,
        /// The relay's explanation.
        message: String,
        /// How long to wait before retrying, if rate limited.
        retry_after_ms: u64,
    },
    /// The relay answered something unexpected.
    #[error("unexpected reply from the relay")]
    Protocol,
    /// Network or file I/O.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The relay URL is not `ws://host:port` or `wss://host:port`.
    #[error("bad relay URL: {0}")]
    Url(String),
    /// No such user, device or group.
    #[error("unknown {0}")]
    Unknown(&'static str),
    /// The operation is not allowed (for example, removing a member without being an admin).
    #[error("not allowed: {0}")]
    NotAllowed(String),
    /// An attachment failed verification or decryption.
    #[error("attachment: {0}")]
    Attachment(String),
    /// A message could not be encrypted.
    #[error("encrypt: {0}")]
    Encrypt(String),
    /// A message could not be decrypted.
    #[error("decrypt: {0}")]
    Decrypt(String),
    /// Input out of range (text too long, user id invalid, ...).
    #[error("invalid input: {0}")]
    Invalid(&'static str),
}

impl From<rusqlite::Error> for ClientError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Store(e.to_string())
    }
}

impl From<hush_crypto::SealError> for ClientError {
    fn from(_: hush_crypto::SealError) -> Self {
        Self::Sealed
    }
}

impl From<prost::DecodeError> for ClientError {
    fn from(_: prost::DecodeError) -> Self {
        Self::Sealed
    }
}
