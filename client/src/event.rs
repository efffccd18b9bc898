//! What the client tells the app, as a stream of typed events.

use hush_crypto::SafetyNumber;

/// A device: a user id and a device number.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(
    any(test, feature = "web"),
    derive(serde::Serialize, serde::Deserialize)
)]
pub struct Address {
    /// The user id.
    pub user: String,
    /// The device number.
    pub device: u32,
}

impl Address {
    /// Builds an address.
    pub fn new(user: impl Into<String>, device: u32) -> Self {
        Self {
            user: user.into(),
            device,
        }
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.user, self.device)
    }
}

/// A 16-byte message id, chosen by the sender.
pub type MessageId = [u8; 16];

/// A 32-byte group id.
pub type GroupId = [u8; 32];

/// A conversation: with a user (all their devices) or a group.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Conversation {
    /// One-to-one with a user.
    Direct(String),
    /// A group.
    Group(GroupId),
}

/// An attachment pointer (docs/SPEC.md §15.2). Holds the attachment key: do not log it.
#[derive(Clone, PartialEq, Eq)]
pub struct Attachment {
    /// The relay's blob id (hex SHA-256 of the ciphertext).
    pub blob_id: String,
    /// The attachment key.
    pub key: [u8; 32],
    /// SHA-256 of the ciphertext.
    pub digest: [u8; 32],
    /// Plaintext size in bytes.
    pub size: u64,
    /// Media type, e.g. `image/png`.
    pub media_type: String,
    /// The sender's file name (never use it as a path unchecked).
    pub file_name: String,
}

impl std::fmt::Debug for Attachment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attachment")
            .field("blob_id", &self.blob_id)
            .field("key", &"<redacted>")
            .field("size", &self.size)
            .field("media_type", &self.media_type)
            .finish_non_exhaustive()
    }
}

/// The body of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// Text.
    Text(String),
    /// A file.
    Attachment(Attachment),
}

/// A message, received or sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Its id.
    pub id: MessageId,
    /// The sending device.
    pub from: Address,
    /// The conversation it belongs to.
    pub conversation: Conversation,
    /// What it says.
    pub body: Body,
    /// The sender's clock, in ms since the epoch.
    pub sent_ms: u64,
    /// The relay's timestamp (0 for messages this device sent).
    pub server_ms: u64,
    /// Sent by this user (from this device, or synced from another of the user's devices).
    pub outgoing: bool,
    /// A group message whose sender had not yet applied the group's latest removal when it
    /// sent it: the removed member may be able to read it too. Show a warning; a relay
    /// withholding a removal from some members shows up this way (SPEC §13.3).
    pub before_removal: bool,
    /// How many times it was forwarded before it reached this device (0: written by its
    /// sender). The forwarding clients set it; a modified client can lie (SPEC §16.2).
    pub forwarded: u32,
    /// A received message this device can report as abuse ([`crate::Client::report`],
    /// SPEC §17): every text and attachment received from another device is.
    pub reportable: bool,
}

impl Message {
    /// Forwarded at least once: show it as "forwarded".
    pub const fn is_forwarded(&self) -> bool {
        self.forwarded > 0
    }

    /// Forwarded [`crate::FORWARDED_MANY_TIMES`] times or more: show it as "forwarded many
    /// times"; it can be forwarded to one chat at a time.
    pub const fn forwarded_many_times(&self) -> bool {
        self.forwarded >= crate::FORWARDED_MANY_TIMES
    }
}

/// The three ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[cfg_attr(
    any(test, feature = "web"),
    derive(serde::Serialize, serde::Deserialize)
)]
pub enum ReceiptKind {
    /// The relay stored the message durably for every recipient device.
    Sent,
    /// A recipient device acknowledged it.
    Delivered,
    /// A recipient reported it read.
    Read,
}

/// A membership change, as this device saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupChange {
    /// This device joined (was added to, or created) the group.
    Joined {
        /// The group's name.
        name: String,
        /// Member devices, excluding this one.
        members: Vec<Address>,
    },
    /// A device was added.
    Added(Address),
    /// A device was removed by an admin.
    Removed(Address),
    /// A device left.
    Left(Address),
    /// This device was removed.
    RemovedSelf,
    /// A device's role changed.
    RoleChanged(Address),
}

/// Why an envelope did not decrypt or verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Undecryptable {
    /// No session (current or previous) decrypts this session message.
    #[error("no session decrypts it")]
    Session(#[source] hush_sessions::error::DecryptError),
    /// A prekey message that could not start a session.
    #[error("the prekey message was refused")]
    Accept(#[source] hush_sessions::error::AcceptError),
    /// A group message that did not decrypt or verify.
    #[error("the group message did not decrypt")]
    Group(#[source] hush_groups::GroupDecryptError),
    /// A group control message or group info that did not build or apply.
    #[error("the group change was refused")]
    Control(#[source] hush_groups::ControlError),
    /// A sender-key distribution that the group refused.
    #[error("the sender key was refused")]
    Distribution(#[source] hush_groups::DistributionError),
    /// A text or attachment that does not open its envelope's franking commitment
    /// (SPEC §17), or carries none: it could not be reported, so it is not shown.
    #[error("the message does not match its franking commitment")]
    Franking,
    /// A prekey message for a signed prekey this device does not have.
    #[error("unknown signed prekey")]
    UnknownSignedPrekey,
    /// A prekey message for a one-time prekey already used.
    #[error("one-time prekey already used")]
    OneTimePrekeyUsed,
    /// A post-quantum prekey message for a KEM prekey this device does not hold (a one-time
    /// KEM prekey already used, or a last-resort one rotated away).
    #[error("KEM prekey not available")]
    KemPrekeyUsed,
    /// A post-quantum prekey message that repeats a session already started with the
    /// last-resort KEM prekey (a replay, SPEC §6.2).
    #[error("last-resort KEM prekey use repeated")]
    KemPrekeyReused,
    /// A classical prekey message, refused under [`crate::PostQuantum::Required`].
    #[error("a classical session was refused: post-quantum is required")]
    ClassicalRefused,
    /// A prekey message whose identity key is not the one registered for the sender.
    #[error("identity key is not the one registered for the sending device")]
    NotRegisteredIdentity,
    /// The content's message id is not the envelope's.
    #[error("message id mismatch")]
    MessageIdMismatch,
}

/// Why a message waits in the outbox ([`Event::SendDelayed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DelayReason {
    /// A recipient device's mailbox at the relay is full (it has been offline long, or
    /// someone is flooding it); the message goes once it has room.
    MailboxFull,
    /// This device is sending faster than the relay allows; the message goes after the
    /// relay's delay.
    RateLimited,
}

/// Why an incoming envelope was dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DropReason {
    /// It did not decode.
    Malformed,
    /// It did not decrypt or verify (the session or group is unchanged).
    Undecryptable(Undecryptable),
    /// No session with the sender and it is not a prekey message.
    NoSession,
    /// A group message for a group this device is not in, or from a non-member.
    UnknownGroup,
    /// A group message or sender key that came before the group change or sender key it
    /// needs, was held (SPEC §16.9), and was still waiting after
    /// [`HELD_ITEM_TTL_MS`](crate::HELD_ITEM_TTL_MS) or when
    /// [`MAX_HELD_ITEMS`](crate::MAX_HELD_ITEMS) newer ones were held.
    TooEarly,
}

/// Events, in the order they happened. Each is emitted after the state change that caused
/// it is committed to the on-device store.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// Connected and authenticated.
    Connected {
        /// This connection registered the device.
        registered: bool,
    },
    /// The connection dropped, or connecting failed (reported once per kind of failure, not
    /// on every retry); the client tries again with backoff.
    Disconnected {
        /// Why: `None` when the app stopped the client, else the error that ended the
        /// connection (no secrets in it).
        reason: Option<std::sync::Arc<crate::ClientError>>,
    },
    /// A stored record did not open under the storage key or did not decode (a damaged
    /// disk, a bug): it was moved out of the way, kept in the store's `set_aside` table, and
    /// everything else goes on. What was lost with it is in [`crate::StoredRecord`]'s docs.
    RecordSetAside {
        /// Which record.
        record: crate::StoredRecord,
    },
    /// A message arrived (or a copy of one this user sent from another device).
    Message(Message),
    /// A tick for a message this device sent.
    Receipt {
        /// The message.
        message_id: MessageId,
        /// Which tick.
        kind: ReceiptKind,
        /// The recipient device (for `Sent`, this device).
        by: Address,
        /// When, in ms since the epoch.
        at_ms: u64,
    },
    /// A watched user's presence changed.
    Presence(Presence),
    /// A device's identity key changed: the old session is gone, and the user should
    /// re-verify the safety number.
    IdentityChanged {
        /// The device.
        address: Address,
        /// The new safety number between this device and it.
        safety_number: SafetyNumber,
    },
    /// A group's membership changed.
    Group {
        /// The group.
        group: GroupId,
        /// What changed.
        change: GroupChange,
        /// The device that made the change.
        by: Address,
    },
    /// A message waits in the outbox: the relay refused it for now, and it is tried again
    /// by itself (the app may tell the user why it has no "sent" tick yet). Emitted once per
    /// message and reason, however often it is retried, until it is sent or fails.
    SendDelayed {
        /// The message.
        message_id: MessageId,
        /// Why.
        reason: DelayReason,
    },
    /// A message could not be sent and was removed from the outbox.
    SendFailed {
        /// The message.
        message_id: MessageId,
        /// Why (for example `ClientError::Relay` with the relay's code).
        reason: std::sync::Arc<crate::ClientError>,
    },
    /// An envelope was dropped (acknowledged to the relay, nothing else changed).
    Dropped {
        /// The sending device.
        from: Address,
        /// Why.
        reason: DropReason,
    },
    /// One-time prekeys were uploaded (after the relay said stock was low, or at
    /// registration).
    PrekeysUploaded {
        /// How many.
        count: u32,
    },
    /// One-time KEM prekeys were uploaded (at registration, or after the relay reported
    /// its stock low).
    KemPrekeysUploaded {
        /// How many.
        count: u32,
    },
    /// A new session with a device started: this device's first message to it, or its
    /// first message to this device. Says whether the session is post-quantum (PQXDH).
    SessionStarted {
        /// The other device.
        with: Address,
        /// Agreed with PQXDH (ML-KEM-768 beside X25519), so that recording it now and
        /// breaking X25519 later does not reveal it.
        post_quantum: bool,
        /// This device started it (else the other device did).
        initiated: bool,
    },
    /// The signed prekey was rotated.
    SignedPrekeyRotated {
        /// Its new id.
        id: u32,
    },
}

/// A known device of a user, as [`crate::Client::safety_numbers`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSafety {
    /// The device.
    pub address: Address,
    /// The safety number between this device and it.
    pub safety_number: SafetyNumber,
    /// Whether the current session with it is post-quantum (PQXDH); `None` before the first
    /// session.
    pub post_quantum: Option<bool>,
    /// Where the session's post-quantum ratchet stands (SPEC §7.8), if it runs one: its
    /// epoch, and the newest epoch whose ML-KEM secret is mixed into new chains.
    pub pq_ratchet: Option<hush_sessions::PqStatus>,
}

/// A user's presence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    /// The user.
    pub user: String,
    /// Active within the relay's online window.
    pub online: bool,
    /// Last activity, in ms since the epoch; `None` if hidden or never seen.
    pub last_seen_ms: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attachment_debug_holds_no_key_bytes() {
        let a = Attachment {
            blob_id: "ab".repeat(32),
            key: [0x5a; 32],
            digest: [0xab; 32],
            size: 10,
            media_type: "image/png".into(),
            file_name: "x.png".into(),
        };
        let text = format!("{a:?} {:?}", Body::Attachment(a.clone()));
        assert!(text.contains("<redacted>"));
        assert!(!text.contains(&hex::encode([0x5a; 32])));
        assert!(!text.contains("5a5a") && !text.contains("90, 90"), "{text}");
    }
}
