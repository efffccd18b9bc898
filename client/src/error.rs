//! Errors of the client SDK. None carries key material or message content.

use hush_relay_protocol::proto::ErrorCode as WireCode;

/// Why the relay refused a request (docs/SPEC.md §14.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RelayErrorCode {
    /// The request was not understood.
    Malformed,
    /// A frame, envelope, upload or blob over the relay's size limit.
    TooLarge,
    /// The request needs an authenticated connection.
    Unauthenticated,
    /// Authentication failed.
    AuthFailed,
    /// Not allowed (a registration token or device link is missing or invalid...).
    Forbidden,
    /// A recipient device is not registered.
    UnknownRecipient,
    /// A recipient's mailbox is full.
    MailboxFull,
    /// Over a rate limit: retry after the advised delay.
    RateLimited,
    /// More recipients than the relay allows in one send.
    TooManyRecipients,
    /// No such user, device or bundle.
    NotFound,
    /// A key is not a valid public key.
    InvalidKey,
    /// A signature does not verify.
    BadSignature,
    /// The relay failed.
    Internal,
    /// The relay is shutting down.
    ShuttingDown,
    /// The relay timed the connection out.
    Timeout,
    /// A code this version does not know.
    Other(i32),
}

impl From<i32> for RelayErrorCode {
    fn from(code: i32) -> Self {
        match WireCode::try_from(code) {
            Ok(WireCode::Malformed) => Self::Malformed,
            Ok(WireCode::TooLarge) => Self::TooLarge,
            Ok(WireCode::Unauthenticated) => Self::Unauthenticated,
            Ok(WireCode::AuthFailed) => Self::AuthFailed,
            Ok(WireCode::Forbidden) => Self::Forbidden,
            Ok(WireCode::UnknownRecipient) => Self::UnknownRecipient,
            Ok(WireCode::MailboxFull) => Self::MailboxFull,
            Ok(WireCode::RateLimited) => Self::RateLimited,
            Ok(WireCode::TooManyRecipients) => Self::TooManyRecipients,
            Ok(WireCode::NotFound) => Self::NotFound,
            Ok(WireCode::InvalidKey) => Self::InvalidKey,
            Ok(WireCode::BadSignature) => Self::BadSignature,
            Ok(WireCode::Internal) => Self::Internal,
            Ok(WireCode::ShuttingDown) => Self::ShuttingDown,
            Ok(WireCode::Timeout) => Self::Timeout,
            Ok(WireCode::Unspecified) | Err(_) => Self::Other(code),
        }
    }
}

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The on-device store failed (its backend's error is the source).
    #[error("store failed")]
    Store(#[from] crate::store::StoreError),
    /// A stored record opened under the storage key but does not decode: written by an
    /// incompatible version, or corrupted before it was sealed.
    #[error("a stored record does not decode")]
    Corrupt,
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
        code: RelayErrorCode,
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

impl From<hush_crypto::SealError> for ClientError {
    fn from(_: hush_crypto::SealError) -> Self {
        Self::Sealed
    }
}

impl From<prost::DecodeError> for ClientError {
    /// Never "sealed with another key": the record opened, its contents are wrong.
    fn from(_: prost::DecodeError) -> Self {
        Self::Corrupt
    }
}
