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
    /// The user already has the most devices the relay allows: remove one first.
    TooManyDevices,
    /// A user's devices changed since the device list a send was made for: list them again.
    StaleDevices,
    /// An abuse report that does not verify (SPEC §17).
    ReportRefused,
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
            Ok(WireCode::TooManyDevices) => Self::TooManyDevices,
            Ok(WireCode::StaleDevices) => Self::StaleDevices,
            Ok(WireCode::ReportRefused) => Self::ReportRefused,
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
    /// The relay announced another `relay_id` than the one configured
    /// (`ClientConfig::relay_id`): the device did not authenticate to it.
    #[error("the relay is not the configured one")]
    WrongRelay,
    /// Network or file I/O.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The relay URL, or the TLS set-up for it, is not usable.
    #[error("bad relay URL or TLS set-up")]
    Url(#[source] UrlError),
    /// No such user, device or group.
    #[error("unknown {0}")]
    Unknown(&'static str),
    /// The group refused the change (for example, removing a member without being an
    /// admin).
    #[error("group change refused")]
    NotAllowed(#[source] hush_groups::ControlError),
    /// An attachment failed to upload, download or verify.
    #[error("attachment failed")]
    Attachment(#[source] AttachmentError),
    /// A message could not be encrypted.
    #[error("encryption failed")]
    Encrypt(#[source] EncryptError),
    /// A group payload did not decrypt.
    #[error("decryption failed")]
    Decrypt(#[source] hush_groups::GroupDecryptError),
    /// Input out of range (text too long, user id invalid, ...).
    #[error("invalid input: {0}")]
    Invalid(&'static str),
    /// A forward to more chats than allowed at once ([`crate::ForwardLimits`]).
    #[error("a forward may go to at most {max} chat(s) at once")]
    ForwardLimit {
        /// The chats allowed for this message.
        max: usize,
    },
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

/// Why the relay URL or its TLS set-up is not usable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UrlError {
    /// The scheme is not `ws://` or `wss://`.
    #[error("the scheme must be ws:// or wss://")]
    Scheme,
    /// The port is not a number from 1 to 65535.
    #[error("bad port")]
    Port,
    /// No host.
    #[error("no host")]
    NoHost,
    /// The host is not a valid TLS server name.
    #[error("the host is not a valid TLS server name")]
    TlsName,
    /// The extra CA file could not be read or parsed.
    #[error("the CA file could not be read")]
    CaFile(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// TLS could not be configured.
    #[error("TLS could not be configured")]
    Tls(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Why an attachment failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AttachmentError {
    /// The file is over the relay's blob limit.
    #[error("{size} bytes is over the relay's limit of {max}")]
    TooLarge {
        /// The file's size.
        size: u64,
        /// The relay's limit.
        max: u64,
    },
    /// The relay answered with this HTTP status.
    #[error("the relay answered HTTP {0}")]
    Http(u16),
    /// The relay's answer to an upload named another blob.
    #[error("the relay returned another blob id")]
    WrongBlobId,
    /// The pointer's blob id is not a digest.
    #[error("the pointer's blob id is not valid")]
    BadBlobId,
    /// The blob or the decrypted file is not the size the pointer says.
    #[error("the size does not match the pointer")]
    SizeMismatch,
    /// The download ended early.
    #[error("the download was cut short")]
    CutShort,
    /// The blob is not the one the pointer's digest names.
    #[error("the digest does not match the pointer")]
    DigestMismatch,
    /// A chunk did not seal or open (SPEC §15).
    #[error("a chunk did not seal or open")]
    Chunk(#[source] hush_crypto::attachment::AttachmentError),
}

/// Why a message could not be encrypted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncryptError {
    /// A session could not start from the peer's prekey bundle.
    #[error("no session from the prekey bundle")]
    Init(#[source] hush_sessions::error::InitError),
    /// The session refused to encrypt.
    #[error("the session refused")]
    Session(#[source] hush_sessions::error::EncryptError),
    /// The group refused to encrypt.
    #[error("the group refused")]
    Group(#[source] hush_groups::GroupEncryptError),
}
