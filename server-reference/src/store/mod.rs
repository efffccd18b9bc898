//! Storage: the [`Store`] trait the protocol code uses (no SQL outside this module), and its
//! embedded SQLite implementation.
//!
//! [`SqliteStore`] runs every operation on one database thread. Operations that arrive
//! together are committed together (group commit): each checks before it writes, so one that
//! refuses has written nothing, then one `COMMIT` makes the whole batch durable (WAL mode,
//! `synchronous = FULL`; a database error rolls the whole batch back and fails everyone in
//! it), and only then does any caller get its answer. So a "sent" acknowledgement always means "on disk", and
//! throughput under load is bounded by batches, not by fsyncs per message.
//!
//! The SQLite implementation lives in `store/sqlite`, one file per concern (schema and
//! migrations, ids, WAL checkpoints, mailbox, directory, presence, blobs); [`pg`] is the
//! PostgreSQL implementation; [`inspect()`] reads a relay database for auditing.

mod inspect;
pub mod pg;
mod sqlite;

use std::future::Future;
use std::sync::Arc;

pub use hush_relay_protocol::Addr;

pub use self::inspect::{Inspection, inspect};
pub use self::sqlite::{MAX_BATCH, SqliteStore};

/// A stored one-time prekey or signed prekey.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredPrekey {
    /// Its id.
    pub id: u32,
    /// The X25519 public key.
    pub key: Vec<u8>,
}

/// A stored KEM prekey (one-time or last-resort), with its owner's signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredKemPrekey {
    /// Its id.
    pub id: u32,
    /// The ML-KEM-768 public key (1,184 bytes).
    pub key: Vec<u8>,
    /// The identity key's signature over it.
    pub signature: Vec<u8>,
}

/// A checked prekey upload (signatures verified under the device's identity key).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrekeyUpload {
    /// A new signed prekey and its signature.
    pub signed: Option<(StoredPrekey, Vec<u8>)>,
    /// Whether that signature is for the post-quantum suite: then the device must have a
    /// last-resort KEM prekey once the upload is stored ([`StoreError::NoLastResort`]).
    pub post_quantum: bool,
    /// New one-time prekeys.
    pub one_time: Vec<StoredPrekey>,
    /// New one-time KEM prekeys.
    pub kem_one_time: Vec<StoredKemPrekey>,
    /// A new last-resort KEM prekey (replacing the stored one).
    pub kem_last_resort: Option<StoredKemPrekey>,
}

/// The most prekeys of each kind the store keeps for one device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrekeyCaps {
    /// One-time prekeys.
    pub one_time: u64,
    /// One-time KEM prekeys.
    pub kem_one_time: u64,
}

/// A device's prekey stock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PrekeyStock {
    /// One-time prekeys left.
    pub one_time: u64,
    /// One-time KEM prekeys left.
    pub kem_one_time: u64,
    /// Whether a last-resort KEM prekey is stored.
    pub kem_last_resort: bool,
}

/// A prekey bundle as the directory hands it out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredBundle {
    /// The device's identity key.
    pub identity_key: Vec<u8>,
    /// The signed prekey.
    pub signed_prekey: StoredPrekey,
    /// Its signature.
    pub signature: Vec<u8>,
    /// One one-time prekey, taken out of the directory for this fetch only.
    pub one_time_prekey: Option<StoredPrekey>,
    /// One one-time KEM prekey, taken out for this fetch only, or else the last-resort one
    /// (`true` when one-time).
    pub kem_prekey: Option<(StoredKemPrekey, bool)>,
}

/// A queued envelope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEnvelope {
    /// Mailbox entry id, increasing per relay.
    pub envelope_id: u64,
    /// The sending device.
    pub sender: Addr,
    /// The sender's message id.
    pub message_id: Vec<u8>,
    /// When the relay stored it (ms since the Unix epoch).
    pub server_ms: u64,
    /// The opaque ciphertext.
    pub ciphertext: Vec<u8>,
    /// The sender's franking commitment (SPEC §17), if it gave one.
    pub franking_commitment: Option<[u8; 32]>,
}

/// An abuse report the relay verified (SPEC §17), kept for its operator.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredReport {
    /// Report id, increasing (0 before it is kept).
    pub id: u64,
    /// The device that reported (the message's recipient).
    pub reporter: Addr,
    /// The device that sent the message.
    pub sender: Addr,
    /// When the relay stored the message (ms since the Unix epoch).
    pub server_ms: u64,
    /// The message as committed (SPEC §16.2).
    pub content: Vec<u8>,
    /// The reporter's words.
    pub reason: String,
    /// What the reporter agreed to before reporting.
    pub consent: String,
    /// The relay's franking tag: one report per reporter and message.
    pub tag: [u8; 32],
    /// When the report came (ms since the Unix epoch).
    pub received_ms: u64,
}

impl std::fmt::Debug for StoredReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The content is a message: for the operator's eyes, not for logs.
        f.debug_struct("StoredReport")
            .field("id", &self.id)
            .field("reporter", &self.reporter)
            .field("sender", &self.sender)
            .field("server_ms", &self.server_ms)
            .field("content_len", &self.content.len())
            .finish_non_exhaustive()
    }
}

/// A queued receipt, for the sender of a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredReceipt {
    /// Receipt id, to acknowledge.
    pub receipt_id: u64,
    /// `false`: delivered; `true`: read.
    pub read: bool,
    /// The device that received (or read) the message.
    pub recipient: Addr,
    /// The message id.
    pub message_id: Vec<u8>,
    /// When (ms since the Unix epoch).
    pub at_ms: u64,
}

/// One envelope for [`Store::enqueue_many`]: a ciphertext for one or more recipients.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    /// The recipient devices (sorted, no duplicates).
    pub recipients: Vec<Addr>,
    /// The sender's message id.
    pub message_id: Vec<u8>,
    /// The opaque ciphertext.
    pub ciphertext: Vec<u8>,
    /// The sender's franking commitment (SPEC §17), if it gave one.
    pub franking_commitment: Option<[u8; 32]>,
}

/// The recipients an envelope was not stored for because their mailbox (or the sender's
/// share of it) was full: [`StoreError::MailboxFull`] or [`StoreError::SenderShareFull`]
/// (or, on a sharded store, their shard failed: [`StoreError::RecipientUnavailable`]), in
/// recipient order. Empty when it was stored for every recipient.
pub type Refusals = Vec<StoreError>;

/// A stored message as it is pushed: shared by every recipient of a multi-recipient send.
#[derive(Debug, PartialEq, Eq)]
pub struct PushedMessage {
    /// The sending device.
    pub sender: Addr,
    /// The sender's message id.
    pub message_id: Vec<u8>,
    /// When the relay stored it (ms since the Unix epoch).
    pub server_ms: u64,
    /// The opaque ciphertext.
    pub ciphertext: Vec<u8>,
    /// The sender's franking commitment (SPEC §17), if it gave one.
    pub franking_commitment: Option<[u8; 32]>,
}

/// Something that has just been committed and is for one device: see
/// [`Store::deliver_on_commit`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// A new envelope in `to`'s mailbox.
    Envelope {
        /// The recipient device.
        to: Addr,
        /// Its mailbox entry id.
        envelope_id: u64,
        /// The message.
        message: std::sync::Arc<PushedMessage>,
        /// The id of the envelope committed for `to` just before this one (0: none, or the
        /// store is the only writer and pushes in commit order). A connection that has not
        /// sent that one reads its mailbox instead: with several writers (relay nodes, or
        /// concurrent batches) a push can arrive before an earlier commit's.
        after: u64,
    },
    /// A new receipt for `to`, the sender of a message.
    Receipt {
        /// The device that sent the message.
        to: Addr,
        /// The receipt.
        receipt: StoredReceipt,
        /// The id of the receipt committed for `to` just before this one, as for envelopes.
        after: u64,
    },
}

impl Delivery {
    /// The device it is for.
    pub fn to(&self) -> &Addr {
        match self {
            Self::Envelope { to, .. } | Self::Receipt { to, .. } => to,
        }
    }
}

/// Called by a store with the [`Delivery`]s of each operation, in commit order.
pub type DeliveryHook = std::sync::Arc<dyn Fn(Vec<Delivery>) + Send + Sync>;

/// Mailbox limits applied by [`Store::enqueue`].
#[derive(Clone, Copy, Debug)]
pub struct MailboxLimits {
    /// Most envelopes queued per device.
    pub max_count: u64,
    /// Most ciphertext bytes queued per device.
    pub max_bytes: u64,
    /// Most envelopes one sending user may have queued in one device's mailbox.
    pub sender_max_count: u64,
    /// Most ciphertext bytes one sending user may have queued in one device's mailbox.
    pub sender_max_bytes: u64,
    /// How long an envelope waits (ms) before it expires.
    pub ttl_ms: u64,
}

/// A day in ms: blob quotas count per UTC day, `now_ms / DAY_MS`.
pub const DAY_MS: u64 = 24 * 3600 * 1000;

/// Receipt limits applied by [`Store::ack`] and [`Store::expire`] (docs/SPEC.md §14.3,
/// "Receipts").
#[derive(Clone, Copy, Debug)]
pub struct ReceiptLimits {
    /// Most receipts queued for one device; past it, new receipts for that device are
    /// dropped (and counted) until it acknowledges some.
    pub max_queued: u64,
    /// How long (ms) a queued receipt is kept.
    pub ttl_ms: u64,
}

/// Storage failures.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A recipient device is not registered.
    #[error("unknown recipient")]
    UnknownRecipient(Addr),
    /// A recipient's mailbox is at its cap (as an error: every recipient's was, and nothing
    /// was stored).
    #[error("mailbox full")]
    MailboxFull(Addr),
    /// The sender's share of a recipient's mailbox is full (as an error: every recipient
    /// was full, and nothing was stored).
    #[error("sender's share of a mailbox full")]
    SenderShareFull(Addr),
    /// The database failed; the source is the database driver's error (shared: a failed
    /// batch fails every operation in it with the same error).
    #[error("database error")]
    Database(#[source] Arc<dyn std::error::Error + Send + Sync>),
    /// An upload would take the device's one-time prekey (or one-time KEM prekey) stock
    /// over its cap.
    #[error("one-time prekey stock full")]
    PrekeyStockFull,
    /// A post-quantum signed prekey without a last-resort KEM prekey beside it.
    #[error("a post-quantum signed prekey needs a last-resort KEM prekey")]
    NoLastResort,
    /// The user already has the most devices allowed; nothing was registered.
    #[error("too many devices")]
    TooManyDevices,
    /// The identity key was removed from this user by its owner and cannot register again.
    #[error("identity key revoked")]
    Revoked,
    /// The batch's commit failed (the database error is logged where it happened).
    #[error("commit failed")]
    CommitFailed,
    /// A PostgreSQL schema name that is not lower-case letters, digits and `_` (at most 63
    /// bytes, not starting with a digit).
    #[error("invalid schema name")]
    InvalidSchemaName,
    /// The database thread is gone.
    #[error("store closed")]
    Closed,
    /// The database could not be reached, or did not answer, in time (PostgreSQL down or
    /// partitioned away). Nothing was written, except when a batch's `COMMIT` had been sent
    /// and its answer did not come: then the outcome is unknown, and a send retried with the
    /// same message id may be stored twice (recipients deduplicate by message id). The
    /// source is the driver's or pool's error.
    #[error("database unavailable")]
    Unavailable(#[source] Arc<dyn std::error::Error + Send + Sync>),
    /// The reporter's user already made its most abuse reports in the last 24 hours.
    #[error("too many reports")]
    TooManyReports,
    /// As a refusal ([`Refusals`]) on a sharded store: the shard that holds this recipient
    /// failed, so the envelope was stored for the other recipients but not for this one
    /// (the sender sends it again later).
    #[error("recipient's shard unavailable")]
    RecipientUnavailable(Addr),
}

impl StoreError {
    /// A database driver's error, kept as the source.
    pub fn database(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Database(Arc::new(e))
    }

    /// The database driver's error, for a [`StoreError::Database`] (downcast it to
    /// `rusqlite::Error` or `tokio_postgres::Error`).
    pub fn database_error(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        match self {
            Self::Database(e) => Some(&**e),
            _ => None,
        }
    }
}

/// An error and its sources, `": "`-separated, for logs and the command line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        Self::database(e)
    }
}

/// Result of registering or authenticating a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceLookup {
    /// Registered with this identity key.
    Known(Vec<u8>),
    /// Not registered; the user has these devices with these identity keys.
    Unknown(Vec<(u32, Vec<u8>)>),
}

/// What the protocol layer needs from storage. Implemented by [`SqliteStore`],
/// [`PgStore`](pg::PgStore) and [`ShardedPgStore`](pg::ShardedPgStore).
pub trait Store: Send + Sync + 'static {
    /// Looks up a device.
    fn device(&self, addr: &Addr) -> impl Future<Output = Result<DeviceLookup, StoreError>> + Send;
    /// Registers a device; `false` if it already exists (nothing changes).
    /// [`StoreError::TooManyDevices`] if the user already has `max_devices` devices,
    /// [`StoreError::Revoked`] if the user removed a device with this identity key.
    fn register(
        &self,
        addr: &Addr,
        identity_key: &[u8],
        now_ms: u64,
        max_devices: usize,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Removes a device: its registration, prekeys, mailbox and queued receipts. Its
    /// identity key is revoked for the user: neither
    /// [`register`](Store::register) nor [`rekey`](Store::rekey) accepts it again. `false`
    /// if there was no such device.
    fn remove_device(&self, addr: &Addr) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Every registered device of `user`, by device id, with its identity key.
    fn devices(
        &self,
        user: &str,
    ) -> impl Future<Output = Result<Vec<(u32, Vec<u8>)>, StoreError>> + Send;
    /// Gives a registered device a new identity key (a reinstall vouched for by another
    /// device of the user) if its key is still `old_key`, and drops its prekeys, which
    /// belonged to the old key. `false` if the key was not `old_key` (nothing changes);
    /// [`StoreError::Revoked`] if `new_key` was revoked for the user.
    fn rekey(
        &self,
        addr: &Addr,
        old_key: &[u8],
        new_key: &[u8],
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Stores an upload in one transaction: replaces the signed prekey and the last-resort
    /// KEM prekey (if given) and adds one-time prekeys and one-time KEM prekeys, unless a
    /// stock would then exceed its cap ([`StoreError::PrekeyStockFull`]) or a post-quantum
    /// signed prekey would be left without a last-resort KEM prekey
    /// ([`StoreError::NoLastResort`]); then nothing changes. Returns the stock.
    fn upload_prekeys(
        &self,
        addr: &Addr,
        upload: PrekeyUpload,
        caps: PrekeyCaps,
    ) -> impl Future<Output = Result<PrekeyStock, StoreError>> + Send;
    /// A bundle for `addr`. If `one_time`, it takes one one-time prekey and one one-time
    /// KEM prekey out (each is handed out once), lowest id first; without a one-time KEM
    /// prekey it carries the last-resort one, if any.
    fn take_bundle(
        &self,
        addr: &Addr,
        one_time: bool,
    ) -> impl Future<Output = Result<Option<StoredBundle>, StoreError>> + Send;
    /// `addr`'s prekey stock.
    fn prekey_count(
        &self,
        addr: &Addr,
    ) -> impl Future<Output = Result<PrekeyStock, StoreError>> + Send;
    /// Stores one ciphertext, durably and in one transaction, for every recipient whose
    /// mailbox (and the sender's share of it) has room, and returns the others, each with
    /// why ([`StoreError::MailboxFull`] or [`StoreError::SenderShareFull`]); one full
    /// mailbox does not hold the envelope back from the rest. If every recipient is full,
    /// or one is not registered, nothing is stored and that is the error.
    fn enqueue(
        &self,
        sender: &Addr,
        recipients: Vec<Addr>,
        message_id: Vec<u8>,
        ciphertext: Vec<u8>,
        now_ms: u64,
        limits: MailboxLimits,
    ) -> impl Future<Output = Result<Refusals, StoreError>> + Send;
    /// Stores several envelopes from one sender, in order, each on its own as
    /// [`Store::enqueue`] does (with its franking commitment, if any); one result per
    /// envelope.
    fn enqueue_many(
        &self,
        sender: &Addr,
        batch: Vec<Outgoing>,
        now_ms: u64,
        limits: MailboxLimits,
    ) -> impl Future<Output = Vec<Result<Refusals, StoreError>>> + Send;
    /// The relay's franking key (SPEC §17): made from `fresh` on first use, then always the
    /// one kept (every node of a cluster reads the same).
    fn franking_key(
        &self,
        fresh: [u8; 32],
    ) -> impl Future<Output = Result<[u8; 32], StoreError>> + Send;
    /// Keeps a verified report, unless the reporter's user made `max_per_day` reports in the
    /// 24 hours before it ([`StoreError::TooManyReports`]). `false` if the same report (same
    /// reporter and tag) was kept already; nothing changes then.
    fn put_report(
        &self,
        report: StoredReport,
        max_per_day: u32,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Every kept report, oldest first.
    fn reports(&self) -> impl Future<Output = Result<Vec<StoredReport>, StoreError>> + Send;
    /// Asks the store to call `hook` with every envelope and receipt it commits, after the
    /// commit, so a relay can push them to connected devices without reading them back.
    /// Each [`Delivery`] names the id committed before it for the same device (`after`), or
    /// 0 if the store pushes in commit order; a connection that has not sent that one reads
    /// its mailbox instead. `false` if this store cannot push (the relay then wakes devices
    /// to read their mailbox). The default is `false`.
    fn deliver_on_commit(&self, hook: DeliveryHook) -> bool {
        let _ = hook;
        false
    }
    /// Queued envelopes for `addr` after `after_id`, oldest first, not expired.
    fn pending(
        &self,
        addr: &Addr,
        after_id: u64,
        limit: u32,
        now_ms: u64,
    ) -> impl Future<Output = Result<Vec<StoredEnvelope>, StoreError>> + Send;
    /// Deletes acknowledged envelopes of `addr` and queues "delivered" receipts for their
    /// senders (within `limits.max_queued`). Ids that are not `addr`'s are ignored. Returns
    /// the senders to wake.
    fn ack(
        &self,
        addr: &Addr,
        envelope_ids: Vec<u64>,
        now_ms: u64,
        limits: ReceiptLimits,
    ) -> impl Future<Output = Result<Vec<Addr>, StoreError>> + Send;
    /// Queued receipts for `addr` after `after_id`.
    fn receipts(
        &self,
        addr: &Addr,
        after_id: u64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<StoredReceipt>, StoreError>> + Send;
    /// Deletes acknowledged receipts of `addr`.
    fn ack_receipts(
        &self,
        addr: &Addr,
        receipt_ids: Vec<u64>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Records activity of `user`.
    fn touch(&self, user: &str, now_ms: u64)
    -> impl Future<Output = Result<(), StoreError>> + Send;
    /// `(last_seen_ms, hidden)` of `user`, if ever seen.
    fn presence(
        &self,
        user: &str,
    ) -> impl Future<Output = Result<Option<(u64, bool)>, StoreError>> + Send;
    /// Lets each of `viewers` see `owner`'s presence until `until_ms` (or later, if already
    /// allowed longer).
    fn grant_presence(
        &self,
        owner: &str,
        viewers: Vec<String>,
        until_ms: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Whether `viewer` may see `owner`'s presence at `now_ms`.
    fn presence_allowed(
        &self,
        owner: &str,
        viewer: &str,
        now_ms: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Sets whether `user` hides its last-seen time.
    fn set_hidden(
        &self,
        user: &str,
        hidden: bool,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Deletes expired envelopes, presence grants, and receipts queued longer than
    /// `receipts.ttl_ms`. Returns how many envelopes.
    fn expire(
        &self,
        now_ms: u64,
        receipts: ReceiptLimits,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
    /// Records a stored blob (or extends its expiry if it exists).
    fn put_blob(
        &self,
        id: &str,
        size: u64,
        expires_ms: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// The size of blob `id`, if it exists and has not expired.
    fn blob(
        &self,
        id: &str,
        now_ms: u64,
    ) -> impl Future<Output = Result<Option<u64>, StoreError>> + Send;
    /// Forgets expired blobs and returns their ids (for deleting their files).
    fn expire_blobs(
        &self,
        now_ms: u64,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;
    /// Records a one-time blob upload token (by its SHA-256) for `addr`, valid until
    /// `expires_ms`. In the database, so any node of a deployment accepts the upload.
    fn put_upload_token(
        &self,
        token_hash: [u8; 32],
        addr: &Addr,
        expires_ms: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Takes a token: the device it was issued to, once, if it has not expired.
    fn take_upload_token(
        &self,
        token_hash: [u8; 32],
        now_ms: u64,
    ) -> impl Future<Output = Result<Option<Addr>, StoreError>> + Send;
    /// Blob bytes `addr` uploaded on `day` (days since the epoch, UTC).
    fn blob_usage(
        &self,
        addr: &Addr,
        day: u64,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
    /// Counts `bytes` more against `addr`'s `day`, unless that takes it over `quota`
    /// (`false`; nothing counted). Days before yesterday are forgotten.
    fn add_blob_usage(
        &self,
        addr: &Addr,
        day: u64,
        bytes: u64,
        quota: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Whether the store can serve requests (the relay's `/readyz`). The default reads one
    /// presence row.
    fn ready(&self) -> impl Future<Output = Result<(), StoreError>> + Send {
        async move { self.presence("").await.map(drop) }
    }
    /// Operations waiting to run (for the queue-depth metric); 0 if not applicable.
    fn queue_depth(&self) -> usize {
        0
    }
}
