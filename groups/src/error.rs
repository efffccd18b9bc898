//! Error types, one per operation. Every failed operation leaves the group state unchanged,
//! and no error text holds key material or plaintext.

use hush_crypto::KeyError;
use thiserror::Error;

/// Bytes are not a well-formed group wire message.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Longer than [`MAX_WIRE_LEN`](crate::config::MAX_WIRE_LEN).
    #[error("input of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Input length.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// Not valid protobuf for the expected message.
    #[error("malformed protobuf")]
    Protobuf,
    /// Not the canonical encoding of its content.
    #[error("non-canonical encoding")]
    NonCanonical,
    /// A required field is absent.
    #[error("missing field {0}")]
    MissingField(&'static str),
    /// A fixed-size field has the wrong length.
    #[error("field {field} has length {len}, expected {expected}")]
    BadLength {
        /// The field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The required length.
        expected: usize,
    },
    /// An identity or signing key is invalid.
    #[error("invalid key: {0}")]
    Key(#[from] KeyError),
    /// A role value other than member (0) or admin (1).
    #[error("unknown role {0}")]
    UnknownRole(i32),
    /// A version this library does not speak.
    #[error("unsupported version {0}")]
    UnsupportedVersion(u32),
}

/// Why a membership change is not valid against the current membership.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum InvalidChange {
    /// Adding someone who is already a member.
    #[error("already a member")]
    AlreadyMember,
    /// Removing, promoting or demoting someone who is not a member.
    #[error("not a member")]
    NotAMember,
    /// The group would exceed its configured size.
    #[error("group is full ({max} members)")]
    GroupFull {
        /// The configured maximum.
        max: u32,
    },
    /// The change would leave members without any admin.
    #[error("the last admin cannot leave, be removed or be demoted while members remain")]
    LastAdmin,
    /// Promoting an admin, or demoting a member.
    #[error("the member already has that role")]
    RoleUnchanged,
    /// A member list naming a member twice.
    #[error("duplicate member in the member list")]
    DuplicateMember,
    /// A member list not in ascending order of identity key bytes.
    #[error("member list is not sorted")]
    UnsortedMembers,
    /// A create message whose signer is not an admin in it, or that is empty.
    #[error("create must list its signer as an admin")]
    CreatorNotAdmin,
    /// A create message at an epoch other than 0, or another change at epoch 0.
    #[error("create is only valid as the first change")]
    MisplacedCreate,
    /// Removing oneself (use leave).
    #[error("an admin leaves with a leave change, not by removing itself")]
    RemoveSelf,
}

/// A membership change (control message or group info) was refused; the state is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ControlError {
    /// Malformed bytes.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// For another group.
    #[error("change is for another group")]
    WrongGroup,
    /// This exact change was already applied.
    #[error("change for epoch {epoch} was already applied")]
    Replayed {
        /// Its epoch.
        epoch: u64,
    },
    /// A change for an epoch older than the current one.
    #[error("stale change for epoch {epoch}; the group is at epoch {current}")]
    Stale {
        /// Its epoch.
        epoch: u64,
        /// The group's epoch.
        current: u64,
    },
    /// A different change already took this epoch, or the change builds on another parent.
    #[error("conflicting change for epoch {epoch}")]
    Conflicting {
        /// Its epoch.
        epoch: u64,
    },
    /// A change for a later epoch: apply the ones before it first (the caller may keep it
    /// and retry).
    #[error("change for epoch {epoch} arrived early; the group is at epoch {current}")]
    FromFuture {
        /// Its epoch.
        epoch: u64,
        /// The group's epoch.
        current: u64,
    },
    /// The signature does not verify under the signer's key.
    #[error("bad signature")]
    BadSignature,
    /// A group's create change that did not come from its creator (another member
    /// forwarded it): only the creator's own counts ([`Group::from_create_by`]).
    ///
    /// [`Group::from_create_by`]: crate::Group::from_create_by
    #[error("the create change did not come from its creator")]
    NotFromCreator,
    /// The signer may not make this change (not an admin; or not a member, for leave).
    #[error("signer is not allowed to make this change")]
    Unauthorized,
    /// The change is not valid against the current membership.
    #[error("invalid change: {0}")]
    Invalid(#[from] InvalidChange),
    /// Joining from a group info that does not list us.
    #[error("the group info does not list this member")]
    NotInGroup,
}

/// A sender-key distribution was refused; the state is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DistributionError {
    /// Malformed bytes.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// For another group.
    #[error("distribution is for another group")]
    WrongGroup,
    /// The sender is not a member.
    #[error("sender is not a member")]
    NotAMember,
    /// The sender was removed from the group.
    #[error("sender was removed from the group")]
    RemovedMember,
    /// The sender's epoch is ahead of ours: apply pending membership changes, then retry.
    #[error("distribution from epoch {epoch}, ahead of ours")]
    FromFutureEpoch {
        /// The sender's epoch.
        epoch: u64,
    },
    /// We already hold this chain.
    #[error("chain already known")]
    Duplicate,
    /// A distribution of our own chain.
    #[error("distribution from ourselves")]
    FromSelf,
}

/// Encryption failed; the state is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum GroupEncryptError {
    /// We are no longer a member.
    #[error("not a member of the group")]
    NotAMember,
    /// The plaintext exceeds [`MAX_PLAINTEXT_LEN`](crate::config::MAX_PLAINTEXT_LEN).
    #[error("plaintext of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Plaintext length.
        len: usize,
        /// Limit.
        max: usize,
    },
}

/// Decryption failed; the state is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum GroupDecryptError {
    /// Malformed bytes.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// For another group.
    #[error("message is for another group")]
    WrongGroup,
    /// The sender is not a member.
    #[error("sender is not a member")]
    NotAMember,
    /// The sender was removed from the group.
    #[error("sender was removed from the group")]
    RemovedMember,
    /// The sender's epoch is ahead of ours: apply pending membership changes, then retry.
    #[error("message from epoch {epoch}, ahead of ours")]
    FromFutureEpoch {
        /// The sender's epoch.
        epoch: u64,
    },
    /// Our own message (for example echoed by the relay).
    #[error("message from ourselves")]
    FromSelf,
    /// No chain with this id from this sender (never distributed to us, or dropped).
    #[error("unknown chain")]
    UnknownChain,
    /// The signature does not verify under the chain's signing key.
    #[error("bad signature")]
    BadSignature,
    /// The message was already decrypted (or its key was evicted).
    #[error("duplicate message")]
    Duplicate,
    /// The message predates the chain state we were given (for example, sent before we
    /// joined).
    #[error("message predates the key we hold")]
    KeyUnavailable,
    /// The message would skip more keys than allowed.
    #[error("message is {gap} keys ahead; the limit is {max}")]
    TooFarAhead {
        /// Keys that would be skipped.
        gap: u32,
        /// The configured maximum.
        max: u32,
    },
    /// Authentic signature but the AEAD did not verify.
    #[error("message failed authentication")]
    Authentication,
}

/// A stored group could not be restored.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum GroupStateError {
    /// The sealed blob did not open.
    #[error(transparent)]
    Seal(#[from] hush_crypto::SealError),
    /// Malformed state or a violated limit.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A state version this library does not read.
    #[error("unsupported state version {0}")]
    UnsupportedVersion(u32),
}
