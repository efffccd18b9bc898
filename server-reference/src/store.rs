//! Storage: the [`Store`] trait the protocol code uses (no SQL outside this module), and its
//! embedded SQLite implementation.
//!
//! [`SqliteStore`] runs every operation on one database thread. Operations that arrive
//! together are committed together (group commit): each runs in its own savepoint, then one
//! `COMMIT` makes the whole batch durable (WAL mode, `synchronous = FULL`), and only then
//! does any caller get its answer. So a "sent" acknowledgement always means "on disk", and
//! throughput under load is bounded by batches, not by fsyncs per message.

use std::future::Future;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};

pub use hush_relay_protocol::Addr;

/// A stored one-time prekey or signed prekey.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredPrekey {
    /// Its id.
    pub id: u32,
    /// The X25519 public key.
    pub key: Vec<u8>,
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
}

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
    },
    /// A new receipt for `to`, the sender of a message.
    Receipt {
        /// The device that sent the message.
        to: Addr,
        /// The receipt.
        receipt: StoredReceipt,
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
    /// How long an envelope waits (ms) before it expires.
    pub ttl_ms: u64,
}

/// Storage failures.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A recipient device is not registered.
    #[error("unknown recipient")]
    UnknownRecipient(Addr),
    /// A recipient's mailbox is at its cap; nothing was stored for anyone.
    #[error("mailbox full")]
    MailboxFull(Addr),
    /// The database failed; the source is the database driver's error (shared: a failed
    /// batch fails every operation in it with the same error).
    #[error("database error")]
    Database(#[source] Arc<dyn std::error::Error + Send + Sync>),
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

/// What the protocol layer needs from storage. Implemented by [`SqliteStore`]; a PostgreSQL
/// implementation provides the same operations.
pub trait Store: Send + Sync + 'static {
    /// Looks up a device.
    fn device(&self, addr: &Addr) -> impl Future<Output = Result<DeviceLookup, StoreError>> + Send;
    /// Registers a device; `false` if it already exists (nothing changes).
    fn register(
        &self,
        addr: &Addr,
        identity_key: &[u8],
        now_ms: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Every registered device of `user`, by device id, with its identity key.
    fn devices(
        &self,
        user: &str,
    ) -> impl Future<Output = Result<Vec<(u32, Vec<u8>)>, StoreError>> + Send;
    /// Gives a registered device a new identity key (a reinstall vouched for by another
    /// device of the user) if its key is still `old_key`, and drops its prekeys, which
    /// belonged to the old key. `false` if the key was not `old_key` (nothing changes).
    fn rekey(
        &self,
        addr: &Addr,
        old_key: &[u8],
        new_key: &[u8],
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Replaces the signed prekey (if given) and adds one-time prekeys.
    fn upload_prekeys(
        &self,
        addr: &Addr,
        signed: Option<(StoredPrekey, Vec<u8>)>,
        one_time: Vec<StoredPrekey>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
    /// A bundle for `addr`, taking one one-time prekey out (each is handed out once).
    fn take_bundle(
        &self,
        addr: &Addr,
    ) -> impl Future<Output = Result<Option<StoredBundle>, StoreError>> + Send;
    /// How many one-time prekeys `addr` has left.
    fn prekey_count(&self, addr: &Addr) -> impl Future<Output = Result<u64, StoreError>> + Send;
    /// Stores one ciphertext for every recipient, durably, all or nothing.
    fn enqueue(
        &self,
        sender: &Addr,
        recipients: Vec<Addr>,
        message_id: Vec<u8>,
        ciphertext: Vec<u8>,
        now_ms: u64,
        limits: MailboxLimits,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Stores several envelopes from one sender, in order, each all or nothing on its own;
    /// one result per envelope. The default stores them one by one.
    fn enqueue_many(
        &self,
        sender: &Addr,
        batch: Vec<Outgoing>,
        now_ms: u64,
        limits: MailboxLimits,
    ) -> impl Future<Output = Vec<Result<(), StoreError>>> + Send {
        async move {
            let mut out = Vec::with_capacity(batch.len());
            for o in batch {
                out.push(
                    self.enqueue(
                        sender,
                        o.recipients,
                        o.message_id,
                        o.ciphertext,
                        now_ms,
                        limits,
                    )
                    .await,
                );
            }
            out
        }
    }
    /// Asks the store to call `hook` with every envelope and receipt it commits, after the
    /// commit and in commit order, so a relay can push them to connected devices without
    /// reading them back. `false` if this store cannot promise that order (the relay then
    /// wakes devices to read their mailbox instead). The default is `false`.
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
    /// senders. Ids that are not `addr`'s are ignored. Returns the senders to wake.
    fn ack(
        &self,
        addr: &Addr,
        envelope_ids: Vec<u64>,
        now_ms: u64,
    ) -> impl Future<Output = Result<Vec<Addr>, StoreError>> + Send;
    /// Queues "read" receipts from `reader` for `sender`'s messages.
    fn read(
        &self,
        reader: &Addr,
        sender: &Addr,
        message_ids: Vec<Vec<u8>>,
        now_ms: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
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
    /// Sets whether `user` hides its last-seen time.
    fn set_hidden(
        &self,
        user: &str,
        hidden: bool,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Deletes expired envelopes. Returns how many.
    fn expire(&self, now_ms: u64) -> impl Future<Output = Result<u64, StoreError>> + Send;
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
    /// Operations waiting to run (for the queue-depth metric); 0 if not applicable.
    fn queue_depth(&self) -> usize {
        0
    }
}

type Reply = Box<dyn FnOnce(bool) + Send>;
/// A job runs on the database thread and returns its answer (to give once the batch's fate
/// is known) and whether it failed in the database, which rolls the whole batch back.
type Job = Box<dyn FnOnce(&mut Db) -> (Reply, bool) + Send>;

/// Most devices whose mailbox usage or registration is remembered on the database thread.
const CACHE_ENTRIES: usize = 100_000;

/// The database thread's connection, and what it remembers between operations so the hot
/// path reads less: each device's mailbox usage (count, bytes), computed from the mailbox
/// when first needed and kept in step by every write, and which devices are registered
/// (devices are never unregistered, so a positive answer stays true). The usage is forgotten
/// whenever a batch rolls back. It also hands out envelope and receipt ids.
struct Db {
    conn: Connection,
    usage: std::collections::HashMap<Addr, (u64, u64)>,
    known: std::collections::HashSet<Addr>,
    envelope_ids: IdCounter,
    receipt_ids: IdCounter,
}

impl Db {
    fn new(conn: Connection, clock_ms: u64) -> Result<Self, StoreError> {
        let envelope_ids = IdCounter::load(
            &conn,
            "envelope",
            "SELECT MAX(envelope_id) FROM mailbox",
            clock_ms,
        )?;
        let receipt_ids = IdCounter::load(
            &conn,
            "receipt",
            "SELECT MAX(receipt_id) FROM receipts",
            clock_ms,
        )?;
        Ok(Self {
            conn,
            usage: Default::default(),
            known: Default::default(),
            envelope_ids,
            receipt_ids,
        })
    }

    fn usage(&mut self, a: &Addr) -> Result<(u64, u64), StoreError> {
        if let Some(u) = self.usage.get(a) {
            return Ok(*u);
        }
        let (count, bytes): (i64, i64) = self
            .conn
            .prepare_cached(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM mailbox WHERE user_id = ?1 AND device_id = ?2",
            )?
            .query_row(params![a.user, a.device], |r| Ok((r.get(0)?, r.get(1)?)))?;
        if self.usage.len() >= CACHE_ENTRIES {
            self.usage.clear();
        }
        let u = (count as u64, bytes as u64);
        self.usage.insert(a.clone(), u);
        Ok(u)
    }

    fn known(&mut self, a: &Addr) -> Result<bool, StoreError> {
        if self.known.contains(a) {
            return Ok(true);
        }
        let found = self
            .conn
            .prepare_cached("SELECT 1 FROM devices WHERE user_id = ?1 AND device_id = ?2")?
            .query_row(params![a.user, a.device], |x| x.get::<_, i64>(0))
            .optional()?
            .is_some();
        if found {
            if self.known.len() >= CACHE_ENTRIES {
                self.known.clear();
            }
            self.known.insert(a.clone());
        }
        Ok(found)
    }

    /// After a rollback: what was remembered may no longer match the database.
    fn rolled_back(&mut self) {
        self.usage.clear();
        self.envelope_ids.unreserve();
        self.receipt_ids.unreserve();
    }
}

/// Most operations committed in one transaction.
pub const MAX_BATCH: usize = 512;
/// A batch takes no more operations after running this long, so that under a steady load
/// its first caller does not wait for many more behind it.
const MAX_BATCH_TIME: std::time::Duration = std::time::Duration::from_millis(20);

/// The schema, one migration per version (`PRAGMA user_version`).
const MIGRATIONS: &[&str] = &[
    // 1
    "CREATE TABLE devices (
        user_id TEXT NOT NULL, device_id INTEGER NOT NULL, identity_key BLOB NOT NULL,
        registered_ms INTEGER NOT NULL, PRIMARY KEY (user_id, device_id));
     CREATE TABLE signed_prekeys (
        user_id TEXT NOT NULL, device_id INTEGER NOT NULL, id INTEGER NOT NULL, key BLOB NOT NULL,
        signature BLOB NOT NULL, PRIMARY KEY (user_id, device_id));
     CREATE TABLE one_time_prekeys (
        user_id TEXT NOT NULL, device_id INTEGER NOT NULL, id INTEGER NOT NULL, key BLOB NOT NULL,
        PRIMARY KEY (user_id, device_id, id));
     CREATE TABLE messages (
        id INTEGER PRIMARY KEY, sender_user TEXT NOT NULL, sender_device INTEGER NOT NULL,
        message_id BLOB NOT NULL, server_ms INTEGER NOT NULL, expires_ms INTEGER NOT NULL,
        ciphertext BLOB NOT NULL, refs INTEGER NOT NULL);
     CREATE TABLE mailbox (
        envelope_id INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT NOT NULL,
        device_id INTEGER NOT NULL, message INTEGER NOT NULL REFERENCES messages(id),
        size INTEGER NOT NULL, expires_ms INTEGER NOT NULL);
     CREATE INDEX mailbox_by_device ON mailbox (user_id, device_id, envelope_id);
     CREATE INDEX mailbox_by_expiry ON mailbox (expires_ms);
     CREATE TABLE mailbox_usage (
        user_id TEXT NOT NULL, device_id INTEGER NOT NULL, count INTEGER NOT NULL,
        bytes INTEGER NOT NULL, PRIMARY KEY (user_id, device_id));
     CREATE TABLE receipts (
        receipt_id INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT NOT NULL,
        device_id INTEGER NOT NULL, read INTEGER NOT NULL, recipient_user TEXT NOT NULL,
        recipient_device INTEGER NOT NULL, message_id BLOB NOT NULL, at_ms INTEGER NOT NULL);
     CREATE INDEX receipts_by_device ON receipts (user_id, device_id, receipt_id);
     CREATE TABLE presence (user_id TEXT PRIMARY KEY, last_seen_ms INTEGER NOT NULL, hidden INTEGER NOT NULL);",
    // 2
    "CREATE TABLE blobs (id TEXT PRIMARY KEY, size INTEGER NOT NULL, expires_ms INTEGER NOT NULL);
     CREATE INDEX blobs_by_expiry ON blobs (expires_ms);",
    // 3
    "CREATE TABLE upload_tokens (token_hash BLOB PRIMARY KEY, user_id TEXT NOT NULL,
        device_id INTEGER NOT NULL, expires_ms INTEGER NOT NULL);",
    // 4: an envelope for one recipient keeps its message in its mailbox row (`message` is
    // NULL); only a multi-recipient send stores its ciphertext once in `messages`, referenced
    // from each mailbox row. Expiry finds messages by time (it was a scan of the whole
    // table). Mailbox usage is counted on the database thread (`Db::usage`) instead of in a
    // table written twice per envelope. Envelope ids keep counting from where they were.
    "CREATE TABLE mailbox4 (
        envelope_id INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT NOT NULL,
        device_id INTEGER NOT NULL, message INTEGER, sender_user TEXT, sender_device INTEGER,
        message_id BLOB, server_ms INTEGER, ciphertext BLOB, size INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL);
     INSERT INTO mailbox4 (envelope_id, user_id, device_id, message, size, expires_ms)
        SELECT envelope_id, user_id, device_id, message, size, expires_ms FROM mailbox;
     DELETE FROM sqlite_sequence WHERE name = 'mailbox4';
     INSERT INTO sqlite_sequence (name, seq) SELECT 'mailbox4', seq FROM sqlite_sequence WHERE name = 'mailbox';
     DROP TABLE mailbox;
     ALTER TABLE mailbox4 RENAME TO mailbox;
     CREATE INDEX mailbox_by_device ON mailbox (user_id, device_id, envelope_id);
     CREATE INDEX mailbox_by_expiry ON mailbox (expires_ms);
     CREATE INDEX messages_by_expiry ON messages (expires_ms);
     DROP TABLE mailbox_usage;",
    // 5: envelope and receipt ids come from counters on the database thread (`IdCounter`),
    // whose high-water marks are kept in `id_marks`, instead of AUTOINCREMENT, which wrote
    // `sqlite_sequence` for every envelope and every receipt. The tables are rebuilt without
    // it (same columns and indexes); the counters continue from the old sequences.
    "CREATE TABLE mailbox5 (
        envelope_id INTEGER PRIMARY KEY, user_id TEXT NOT NULL,
        device_id INTEGER NOT NULL, message INTEGER, sender_user TEXT, sender_device INTEGER,
        message_id BLOB, server_ms INTEGER, ciphertext BLOB, size INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL);
     INSERT INTO mailbox5 SELECT envelope_id, user_id, device_id, message, sender_user,
        sender_device, message_id, server_ms, ciphertext, size, expires_ms FROM mailbox;
     CREATE TABLE receipts5 (
        receipt_id INTEGER PRIMARY KEY, user_id TEXT NOT NULL,
        device_id INTEGER NOT NULL, read INTEGER NOT NULL, recipient_user TEXT NOT NULL,
        recipient_device INTEGER NOT NULL, message_id BLOB NOT NULL, at_ms INTEGER NOT NULL);
     INSERT INTO receipts5 SELECT receipt_id, user_id, device_id, read, recipient_user,
        recipient_device, message_id, at_ms FROM receipts;
     CREATE TABLE id_marks (name TEXT PRIMARY KEY, next INTEGER NOT NULL);
     INSERT INTO id_marks (name, next) VALUES
        ('envelope', COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'mailbox'), 0) + 1),
        ('receipt', COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'receipts'), 0) + 1);
     DROP TABLE mailbox;
     DROP TABLE receipts;
     ALTER TABLE mailbox5 RENAME TO mailbox;
     ALTER TABLE receipts5 RENAME TO receipts;
     CREATE INDEX mailbox_by_device ON mailbox (user_id, device_id, envelope_id);
     CREATE INDEX mailbox_by_expiry ON mailbox (expires_ms);
     CREATE INDEX receipts_by_device ON receipts (user_id, device_id, receipt_id);",
];

/// Ids reserved at a time: the high-water mark in `id_marks` is written once per this many
/// (a few in unit tests, so they cross many marks).
const ID_BLOCK: u64 = if cfg!(test) { 4 } else { 1 << 16 };

/// Hands out envelope or receipt ids on the database thread, in increasing order. Each id
/// is above every id in its table, above the high-water mark in `id_marks` (written, in the
/// same transaction, before any id past it is used, so ids of rows already deleted are not
/// used again after a restart or a crash), and above the clock at start in milliseconds ×
/// 1024, so a database restored from an older copy does not reuse ids handed out after the
/// copy was made (unless the relay gave out more than 1,024 ids per millisecond on average).
struct IdCounter {
    name: &'static str,
    next: u64,
    reserved: u64,
}

impl IdCounter {
    /// `clock_ms`: the time now, in milliseconds since the Unix epoch.
    fn load(
        conn: &Connection,
        name: &'static str,
        max_sql: &str,
        clock_ms: u64,
    ) -> Result<Self, StoreError> {
        let mark: i64 = conn.query_row(
            "SELECT next FROM id_marks WHERE name = ?1",
            params![name],
            |r| r.get(0),
        )?;
        let max: Option<i64> = conn.query_row(max_sql, [], |r| r.get(0))?;
        let next = (mark.max(0) as u64)
            .max(max.map_or(0, |m| m.max(0) as u64 + 1))
            .max(clock_ms.saturating_mul(1024))
            .max(1);
        Ok(Self {
            name,
            next,
            reserved: 0,
        })
    }

    fn take(&mut self, conn: &Connection) -> Result<u64, StoreError> {
        if self.next >= self.reserved {
            let reserved = self.next.saturating_add(ID_BLOCK);
            conn.prepare_cached("UPDATE id_marks SET next = ?2 WHERE name = ?1")?
                .execute(params![self.name, reserved as i64])?;
            self.reserved = reserved;
        }
        let id = self.next;
        self.next += 1;
        Ok(id)
    }

    /// After a rollback the mark may not have been written: write it again before the next
    /// id. The ids handed out in the rolled-back batch are skipped, not reused.
    fn unreserve(&mut self) {
        self.reserved = 0;
    }
}

/// The embedded SQLite store.
#[derive(Clone)]
pub struct SqliteStore {
    jobs: mpsc::Sender<Job>,
    hook: Arc<OnceLock<DeliveryHook>>,
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    migrate_to(conn, MIGRATIONS.len())
}

fn migrate_to(conn: &mut Connection, target: usize) -> Result<(), StoreError> {
    let version = conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))? as usize;
    for (i, sql) in MIGRATIONS.iter().enumerate().take(target).skip(version) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))?;
        tx.commit()?;
    }
    Ok(())
}

/// Statements kept prepared on the database thread: more than the store uses, so none is
/// ever parsed twice.
const STATEMENT_CACHE: usize = 64;

impl SqliteStore {
    /// Operations queued for the database thread and not yet started.
    pub fn queue_depth(&self) -> usize {
        self.jobs.max_capacity() - self.jobs.capacity()
    }

    /// Opens (creating and migrating if needed) the database at `path`, and starts its
    /// thread. `:memory:` gives a throw-away database.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let clock_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Self::open_at(path, clock_ms)
    }

    /// [`open`](Self::open), taking the clock (for the id counters) as an argument.
    fn open_at(path: &Path, clock_ms: u64) -> Result<Self, StoreError> {
        let mut conn = Connection::open(path)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = OFF;
             PRAGMA temp_store = MEMORY; PRAGMA cache_size = -16384;
             PRAGMA journal_size_limit = 67108864;",
        )?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        // A plan that does not depend on bound values: otherwise SQLite may parse a cached
        // statement again each time a parameter changes (it did, for the acknowledgement).
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
            true,
        )?;
        migrate(&mut conn)?;
        let db = Db::new(conn, clock_ms)?;
        let (tx, rx) = mpsc::channel::<Job>(8192);
        let mut checkpointer = None;
        let mut wal_frames = None;
        if path != Path::new(":memory:") {
            // Checkpoints run on their own thread and connection, not in the writer's commits.
            db.conn.execute_batch("PRAGMA wal_autocheckpoint = 0;")?;
            let checkpoints = Connection::open(path)?;
            let (stop, stopped) = std::sync::mpsc::channel::<()>();
            let frames = Arc::new(std::sync::atomic::AtomicI64::new(0));
            wal_frames = Some(frames.clone());
            let thread = std::thread::Builder::new()
                .name("hush-relay-checkpoint".into())
                .spawn(move || checkpoint(checkpoints, stopped, frames))
                .map_err(StoreError::database)?;
            checkpointer = Some((stop, thread));
        }
        std::thread::Builder::new()
            .name("hush-relay-db".into())
            .spawn(move || {
                run(db, rx, wal_frames);
                // Both connections are closed before the database thread ends; closing the
                // last one checkpoints and removes the WAL, so by then the database file is
                // complete.
                if let Some((stop, thread)) = checkpointer {
                    drop(stop);
                    let _ = thread.join();
                }
            })
            .map_err(StoreError::database)?;
        Ok(Self {
            jobs: tx,
            hook: Arc::new(OnceLock::new()),
        })
    }

    /// Runs `f` in a savepoint of the next batch; answers after the batch commits.
    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.call_delivering(move |db| f(&db.conn).map(|v| (v, Vec::new())))
            .await
    }

    /// Like [`call`](Self::call), and once the batch has committed, hands `f`'s deliveries
    /// to the hook (on the database thread, so in commit order) before answering.
    async fn call_delivering<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Db) -> Result<(T, Vec<Delivery>), StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        let hook = self.hook.clone();
        let job: Job = Box::new(move |db: &mut Db| {
            // No savepoint: every operation checks before it writes, so an operation that
            // refuses has written nothing, and one that fails in the database fails its batch.
            let result = f(db);
            let failed = matches!(result, Err(StoreError::Database(_)));
            let reply: Reply = Box::new(move |committed: bool| {
                let answer = match result {
                    Ok((v, deliveries)) if committed => {
                        if let Some(hook) = hook.get()
                            && !deliveries.is_empty()
                        {
                            hook(deliveries);
                        }
                        Ok(v)
                    }
                    Ok(_) => Err(StoreError::CommitFailed),
                    Err(e) => Err(e),
                };
                let _ = tx.send(answer);
            });
            (reply, failed)
        });
        // The channel is bounded: a full queue makes callers wait (back-pressure).
        self.jobs.send(job).await.map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

/// WAL frames (pages) past which the writer finishes a checkpoint itself between two
/// transactions, so that the next one starts the log again from its beginning (64 MiB with
/// 4 KiB pages; 1 MiB in unit tests). Under a load that never pauses, the checkpoint thread
/// alone never catches up with the writer, and the log grew by about 100 MB/s.
const WAL_RESET_FRAMES: i64 = if cfg!(test) { 256 } else { 16_384 };

/// Copies committed pages from the WAL into the database file every 50 ms, beside the
/// writer (a passive checkpoint never blocks it), and tells the writer how long the log is.
/// Stops when `stop` is dropped (by the database thread, as it ends).
fn checkpoint(
    conn: Connection,
    stop: std::sync::mpsc::Receiver<()>,
    wal_frames: Arc<std::sync::atomic::AtomicI64>,
) {
    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
        stop.recv_timeout(std::time::Duration::from_millis(50))
    {
        match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(1)) {
            Ok(frames) => wal_frames.store(frames, std::sync::atomic::Ordering::Relaxed),
            Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed"),
        }
    }
}

/// The writer's part of checkpointing: once the checkpoint thread reports a log longer than
/// [`WAL_RESET_FRAMES`], a passive checkpoint between transactions copies the few frames the
/// checkpoint thread has not (no commit can come in meanwhile), after which the next
/// transaction writes the log from its start and SQLite cuts the file back to
/// `journal_size_limit`.
fn reset_wal_if_long(conn: &Connection, wal_frames: Option<&std::sync::atomic::AtomicI64>) {
    let Some(frames) = wal_frames else { return };
    if frames.load(std::sync::atomic::Ordering::Relaxed) <= WAL_RESET_FRAMES {
        return;
    }
    frames.store(0, std::sync::atomic::Ordering::Relaxed);
    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
        tracing::warn!(error = %e, "WAL checkpoint failed");
    }
}

fn run(
    mut db: Db,
    mut rx: mpsc::Receiver<Job>,
    wal_frames: Option<Arc<std::sync::atomic::AtomicI64>>,
) {
    while let Some(first) = rx.blocking_recv() {
        let begun = db
            .conn
            .prepare_cached("BEGIN IMMEDIATE")
            .and_then(|mut s| s.execute([]));
        if begun.is_err() {
            first(&mut db).0(false);
            db.rolled_back();
            continue;
        }
        let started = std::time::Instant::now();
        let (reply, mut failed) = first(&mut db);
        let mut replies = vec![reply];
        while !failed && replies.len() < MAX_BATCH && started.elapsed() < MAX_BATCH_TIME {
            match rx.try_recv() {
                Ok(job) => {
                    let (reply, f) = job(&mut db);
                    replies.push(reply);
                    failed = f;
                }
                Err(_) => break,
            }
        }
        let committed = !failed
            && db
                .conn
                .prepare_cached("COMMIT")
                .and_then(|mut s| s.execute([]))
                .is_ok();
        if !committed {
            db.rolled_back();
            let _ = db.conn.execute_batch("ROLLBACK");
            tracing::error!(
                "database operation or commit failed; {} operations refused",
                replies.len()
            );
        }
        for reply in replies {
            reply(committed);
        }
        reset_wal_if_long(&db.conn, wal_frames.as_deref());
    }
}

fn addr_params(a: &Addr) -> (String, u32) {
    (a.user.clone(), a.device)
}

/// Checks every recipient of `out` (registered, mailbox under its caps), then stores the
/// message once and an entry in each mailbox. Nothing is written if a check fails.
fn store_envelope(
    db: &mut Db,
    sender: &Addr,
    out: Outgoing,
    now_ms: u64,
    limits: MailboxLimits,
) -> Result<Vec<Delivery>, StoreError> {
    let size = out.ciphertext.len() as i64;
    let expires = now_ms.saturating_add(limits.ttl_ms) as i64;
    for r in &out.recipients {
        if !db.known(r)? {
            return Err(StoreError::UnknownRecipient(r.clone()));
        }
        let (count, bytes) = db.usage(r)?;
        if count >= limits.max_count || bytes + size as u64 > limits.max_bytes {
            return Err(StoreError::MailboxFull(r.clone()));
        }
    }
    let c = &db.conn;
    let mut ids = Vec::with_capacity(out.recipients.len());
    if let [r] = out.recipients.as_slice() {
        // One recipient: the message lives in its mailbox row.
        let id = db.envelope_ids.take(c)?;
        c.prepare_cached(
            "INSERT INTO mailbox (envelope_id, user_id, device_id, sender_user, sender_device, message_id, server_ms, ciphertext, size, expires_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?
        .execute(params![id as i64, r.user, r.device, sender.user, sender.device, out.message_id, now_ms as i64, out.ciphertext, size, expires])?;
        ids.push(id);
    } else {
        c.prepare_cached(
            "INSERT INTO messages (sender_user, sender_device, message_id, server_ms, expires_ms, ciphertext, refs) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![sender.user, sender.device, out.message_id, now_ms as i64, expires, out.ciphertext, out.recipients.len() as i64])?;
        let message = c.last_insert_rowid();
        let mut insert = c.prepare_cached("INSERT INTO mailbox (envelope_id, user_id, device_id, message, size, expires_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?;
        for r in &out.recipients {
            let id = db.envelope_ids.take(c)?;
            insert.execute(params![id as i64, r.user, r.device, message, size, expires])?;
            ids.push(id);
        }
    }
    for r in &out.recipients {
        if let Some(u) = db.usage.get_mut(r) {
            u.0 += 1;
            u.1 += size as u64;
        }
    }
    let pushed = Arc::new(PushedMessage {
        sender: sender.clone(),
        message_id: out.message_id,
        server_ms: now_ms,
        ciphertext: out.ciphertext,
    });
    Ok(out
        .recipients
        .into_iter()
        .zip(ids)
        .map(|(to, envelope_id)| Delivery::Envelope {
            to,
            envelope_id,
            message: pushed.clone(),
        })
        .collect())
}

impl Store for SqliteStore {
    fn queue_depth(&self) -> usize {
        SqliteStore::queue_depth(self)
    }

    async fn device(&self, addr: &Addr) -> Result<DeviceLookup, StoreError> {
        let (user, device) = addr_params(addr);
        self.call(move |c| {
            let key: Option<Vec<u8>> = c
                .query_row(
                    "SELECT identity_key FROM devices WHERE user_id = ?1 AND device_id = ?2",
                    params![user, device],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(k) = key {
                return Ok(DeviceLookup::Known(k));
            }
            let mut stmt =
                c.prepare("SELECT device_id, identity_key FROM devices WHERE user_id = ?1")?;
            let rows = stmt
                .query_map(params![user], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(DeviceLookup::Unknown(rows))
        })
        .await
    }

    async fn register(
        &self,
        addr: &Addr,
        identity_key: &[u8],
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        let (user, device) = addr_params(addr);
        let key = identity_key.to_vec();
        self.call(move |c| {
            let n = c.execute(
                "INSERT OR IGNORE INTO devices (user_id, device_id, identity_key, registered_ms) VALUES (?1, ?2, ?3, ?4)",
                params![user, device, key, now_ms as i64],
            )?;
            Ok(n == 1)
        })
        .await
    }

    async fn devices(&self, user: &str) -> Result<Vec<(u32, Vec<u8>)>, StoreError> {
        let user = user.to_owned();
        self.call(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT device_id, identity_key FROM devices WHERE user_id = ?1 ORDER BY device_id",
            )?;
            let rows = stmt
                .query_map(params![user], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn rekey(&self, addr: &Addr, old_key: &[u8], new_key: &[u8]) -> Result<bool, StoreError> {
        let (user, device) = addr_params(addr);
        let (old, new) = (old_key.to_vec(), new_key.to_vec());
        self.call(move |c| {
            let n = c.execute(
                "UPDATE devices SET identity_key = ?4 WHERE user_id = ?1 AND device_id = ?2 AND identity_key = ?3",
                params![user, device, old, new],
            )?;
            if n == 1 {
                c.execute("DELETE FROM signed_prekeys WHERE user_id = ?1 AND device_id = ?2", params![user, device])?;
                c.execute("DELETE FROM one_time_prekeys WHERE user_id = ?1 AND device_id = ?2", params![user, device])?;
            }
            Ok(n == 1)
        })
        .await
    }

    async fn upload_prekeys(
        &self,
        addr: &Addr,
        signed: Option<(StoredPrekey, Vec<u8>)>,
        one_time: Vec<StoredPrekey>,
    ) -> Result<u64, StoreError> {
        let (user, device) = addr_params(addr);
        self.call(move |c| {
            if let Some((spk, sig)) = signed {
                c.execute(
                    "INSERT OR REPLACE INTO signed_prekeys (user_id, device_id, id, key, signature) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![user, device, spk.id, spk.key, sig],
                )?;
            }
            let mut stmt = c.prepare_cached("INSERT OR REPLACE INTO one_time_prekeys (user_id, device_id, id, key) VALUES (?1, ?2, ?3, ?4)")?;
            for k in one_time {
                stmt.execute(params![user, device, k.id, k.key])?;
            }
            Ok(c.query_row("SELECT COUNT(*) FROM one_time_prekeys WHERE user_id = ?1 AND device_id = ?2", params![user, device], |r| r.get::<_, i64>(0))? as u64)
        })
        .await
    }

    async fn take_bundle(&self, addr: &Addr) -> Result<Option<StoredBundle>, StoreError> {
        let (user, device) = addr_params(addr);
        self.call(move |c| {
            let Some(identity_key) = c
                .query_row("SELECT identity_key FROM devices WHERE user_id = ?1 AND device_id = ?2", params![user, device], |r| r.get::<_, Vec<u8>>(0))
                .optional()?
            else {
                return Ok(None);
            };
            let Some((id, key, signature)) = c
                .query_row("SELECT id, key, signature FROM signed_prekeys WHERE user_id = ?1 AND device_id = ?2", params![user, device], |r| {
                    Ok((r.get::<_, u32>(0)?, r.get::<_, Vec<u8>>(1)?, r.get::<_, Vec<u8>>(2)?))
                })
                .optional()?
            else {
                return Ok(None);
            };
            // One writer thread and a savepoint per operation: the select and delete below
            // cannot interleave with another fetch, so each one-time prekey goes out once.
            let opk = c
                .query_row(
                    "SELECT id, key FROM one_time_prekeys WHERE user_id = ?1 AND device_id = ?2 ORDER BY id LIMIT 1",
                    params![user, device],
                    |r| Ok(StoredPrekey { id: r.get(0)?, key: r.get(1)? }),
                )
                .optional()?;
            if let Some(k) = &opk {
                c.execute("DELETE FROM one_time_prekeys WHERE user_id = ?1 AND device_id = ?2 AND id = ?3", params![user, device, k.id])?;
            }
            Ok(Some(StoredBundle { identity_key, signed_prekey: StoredPrekey { id, key }, signature, one_time_prekey: opk }))
        })
        .await
    }

    async fn prekey_count(&self, addr: &Addr) -> Result<u64, StoreError> {
        let (user, device) = addr_params(addr);
        self.call(move |c| {
            Ok(c.query_row(
                "SELECT COUNT(*) FROM one_time_prekeys WHERE user_id = ?1 AND device_id = ?2",
                params![user, device],
                |r| r.get::<_, i64>(0),
            )? as u64)
        })
        .await
    }

    async fn enqueue(
        &self,
        sender: &Addr,
        recipients: Vec<Addr>,
        message_id: Vec<u8>,
        ciphertext: Vec<u8>,
        now_ms: u64,
        limits: MailboxLimits,
    ) -> Result<(), StoreError> {
        let sender = sender.clone();
        let out = Outgoing {
            recipients,
            message_id,
            ciphertext,
        };
        self.call_delivering(move |db| Ok(((), store_envelope(db, &sender, out, now_ms, limits)?)))
            .await
    }

    async fn enqueue_many(
        &self,
        sender: &Addr,
        batch: Vec<Outgoing>,
        now_ms: u64,
        limits: MailboxLimits,
    ) -> Vec<Result<(), StoreError>> {
        let n = batch.len();
        let sender = sender.clone();
        // One job: each envelope is checked before any of its rows is written, so a refused
        // one leaves nothing behind; a database error fails the whole job.
        let result = self
            .call_delivering(move |db| {
                let mut results = Vec::with_capacity(batch.len());
                let mut deliveries = Vec::with_capacity(batch.len());
                for out in batch {
                    match store_envelope(db, &sender, out, now_ms, limits) {
                        Ok(d) => {
                            deliveries.extend(d);
                            results.push(Ok(()));
                        }
                        Err(e @ StoreError::Database(_)) => return Err(e),
                        Err(e) => results.push(Err(e)),
                    }
                }
                Ok((results, deliveries))
            })
            .await;
        match result {
            Ok(results) => results,
            Err(e) => (0..n).map(|_| Err(e.clone())).collect(),
        }
    }

    fn deliver_on_commit(&self, hook: DeliveryHook) -> bool {
        // One database thread commits everything, and runs the hook after each commit in
        // the order the operations ran: the order this method promises.
        self.hook.set(hook).is_ok()
    }

    async fn pending(
        &self,
        addr: &Addr,
        after_id: u64,
        limit: u32,
        now_ms: u64,
    ) -> Result<Vec<StoredEnvelope>, StoreError> {
        let (user, device) = addr_params(addr);
        self.call(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT mb.envelope_id, COALESCE(mb.sender_user, m.sender_user), COALESCE(mb.sender_device, m.sender_device),
                        COALESCE(mb.message_id, m.message_id), COALESCE(mb.server_ms, m.server_ms), COALESCE(mb.ciphertext, m.ciphertext)
                 FROM mailbox mb LEFT JOIN messages m ON m.id = mb.message
                 WHERE mb.user_id = ?1 AND mb.device_id = ?2 AND mb.envelope_id > ?3 AND mb.expires_ms > ?4
                 ORDER BY mb.envelope_id LIMIT ?5",
            )?;
            let rows = stmt
                .query_map(params![user, device, after_id as i64, now_ms as i64, limit], |r| {
                    Ok(StoredEnvelope {
                        envelope_id: r.get::<_, i64>(0)? as u64,
                        sender: Addr { user: r.get(1)?, device: r.get(2)? },
                        message_id: r.get(3)?,
                        server_ms: r.get::<_, i64>(4)? as u64,
                        ciphertext: r.get(5)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn ack(
        &self,
        addr: &Addr,
        envelope_ids: Vec<u64>,
        now_ms: u64,
    ) -> Result<Vec<Addr>, StoreError> {
        let (user, device) = addr_params(addr);
        let me = addr.clone();
        self.call_delivering(move |db| {
            let c = &db.conn;
            let mut senders = vec![];
            let mut deliveries = vec![];
            let (mut count, mut bytes) = (0u64, 0u64);
            // Plain statements, not RETURNING: that costs a temporary table per statement.
            let mut find = c.prepare_cached(
                "SELECT mb.message, mb.size, m.refs, COALESCE(mb.sender_user, m.sender_user),
                        COALESCE(mb.sender_device, m.sender_device), COALESCE(mb.message_id, m.message_id)
                 FROM mailbox mb LEFT JOIN messages m ON m.id = mb.message
                 WHERE mb.envelope_id = ?1 AND mb.user_id = ?2 AND mb.device_id = ?3",
            )?;
            let mut take = c.prepare_cached("DELETE FROM mailbox WHERE envelope_id = ?1")?;
            let mut unref = c.prepare_cached("UPDATE messages SET refs = refs - 1 WHERE id = ?1")?;
            let mut drop_message = c.prepare_cached("DELETE FROM messages WHERE id = ?1")?;
            let mut receipt = c.prepare_cached(
                "INSERT INTO receipts (receipt_id, user_id, device_id, read, recipient_user, recipient_device, message_id, at_ms) VALUES (?1, ?2, ?3, 0, ?4, ?5, ?6, ?7)",
            )?;
            for id in envelope_ids {
                // Not ours, or already acknowledged: nothing to do.
                // (shared message and its reference count, if any; size; sender; message id)
                let row = find
                    .query_row(params![id as i64, user, device], |r| {
                        Ok((
                            (r.get::<_, Option<i64>>(0)?, r.get::<_, Option<i64>>(2)?),
                            r.get::<_, i64>(1)?,
                            Addr { user: r.get(3)?, device: r.get(4)? },
                            r.get::<_, Vec<u8>>(5)?,
                        ))
                    })
                    .optional()?;
                let Some(((message, refs), size, sender, mid)) = row else {
                    continue;
                };
                take.execute(params![id as i64])?;
                count += 1;
                bytes += size as u64;
                match (message, refs) {
                    (Some(m), Some(refs)) if refs > 1 => unref.execute(params![m])?,
                    (Some(m), _) => drop_message.execute(params![m])?,
                    (None, _) => 0,
                };
                let receipt_id = db.receipt_ids.take(c)?;
                receipt.execute(params![receipt_id as i64, sender.user, sender.device, user, device, mid, now_ms as i64])?;
                deliveries.push(Delivery::Receipt {
                    to: sender.clone(),
                    receipt: StoredReceipt {
                        receipt_id,
                        read: false,
                        recipient: me.clone(),
                        message_id: mid,
                        at_ms: now_ms,
                    },
                });
                senders.push(sender);
            }
            drop((find, take, unref, drop_message, receipt));
            if let Some(u) = db.usage.get_mut(&me) {
                u.0 = u.0.saturating_sub(count);
                u.1 = u.1.saturating_sub(bytes);
            }
            senders.sort();
            senders.dedup();
            Ok((senders, deliveries))
        })
        .await
    }

    async fn read(
        &self,
        reader: &Addr,
        sender: &Addr,
        message_ids: Vec<Vec<u8>>,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let (ru, rd) = addr_params(reader);
        let (reader, sender) = (reader.clone(), sender.clone());
        self.call_delivering(move |db| {
            if !db.known(&sender)? {
                return Err(StoreError::UnknownRecipient(sender));
            }
            let c = &db.conn;
            let mut insert = c.prepare_cached(
                "INSERT INTO receipts (receipt_id, user_id, device_id, read, recipient_user, recipient_device, message_id, at_ms) VALUES (?1, ?2, ?3, 1, ?4, ?5, ?6, ?7)",
            )?;
            let mut deliveries = Vec::with_capacity(message_ids.len());
            for mid in message_ids {
                let receipt_id = db.receipt_ids.take(c)?;
                insert.execute(params![receipt_id as i64, sender.user, sender.device, ru, rd, mid, now_ms as i64])?;
                deliveries.push(Delivery::Receipt {
                    to: sender.clone(),
                    receipt: StoredReceipt {
                        receipt_id,
                        read: true,
                        recipient: reader.clone(),
                        message_id: mid,
                        at_ms: now_ms,
                    },
                });
            }
            Ok(((), deliveries))
        })
        .await
    }

    async fn receipts(
        &self,
        addr: &Addr,
        after_id: u64,
        limit: u32,
    ) -> Result<Vec<StoredReceipt>, StoreError> {
        let (user, device) = addr_params(addr);
        self.call(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT receipt_id, read, recipient_user, recipient_device, message_id, at_ms FROM receipts
                 WHERE user_id = ?1 AND device_id = ?2 AND receipt_id > ?3 ORDER BY receipt_id LIMIT ?4",
            )?;
            let rows = stmt
                .query_map(params![user, device, after_id as i64, limit], |r| {
                    Ok(StoredReceipt {
                        receipt_id: r.get::<_, i64>(0)? as u64,
                        read: r.get::<_, i64>(1)? != 0,
                        recipient: Addr { user: r.get(2)?, device: r.get(3)? },
                        message_id: r.get(4)?,
                        at_ms: r.get::<_, i64>(5)? as u64,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn ack_receipts(&self, addr: &Addr, receipt_ids: Vec<u64>) -> Result<(), StoreError> {
        let (user, device) = addr_params(addr);
        self.call(move |c| {
            for id in receipt_ids {
                c.execute("DELETE FROM receipts WHERE receipt_id = ?1 AND user_id = ?2 AND device_id = ?3", params![id as i64, user, device])?;
            }
            Ok(())
        })
        .await
    }

    async fn touch(&self, user: &str, now_ms: u64) -> Result<(), StoreError> {
        let user = user.to_string();
        self.call(move |c| {
            c.execute(
                "INSERT INTO presence (user_id, last_seen_ms, hidden) VALUES (?1, ?2, 0)
                 ON CONFLICT (user_id) DO UPDATE SET last_seen_ms = MAX(last_seen_ms, ?2)",
                params![user, now_ms as i64],
            )?;
            Ok(())
        })
        .await
    }

    async fn presence(&self, user: &str) -> Result<Option<(u64, bool)>, StoreError> {
        let user = user.to_string();
        self.call(move |c| {
            Ok(c.query_row(
                "SELECT last_seen_ms, hidden FROM presence WHERE user_id = ?1",
                params![user],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? != 0)),
            )
            .optional()?)
        })
        .await
    }

    async fn set_hidden(&self, user: &str, hidden: bool) -> Result<(), StoreError> {
        let user = user.to_string();
        self.call(move |c| {
            c.execute(
                "INSERT INTO presence (user_id, last_seen_ms, hidden) VALUES (?1, 0, ?2)
                 ON CONFLICT (user_id) DO UPDATE SET hidden = ?2",
                params![user, i64::from(hidden)],
            )?;
            Ok(())
        })
        .await
    }

    async fn expire(&self, now_ms: u64) -> Result<u64, StoreError> {
        self.call_delivering(move |db| {
            let c = &db.conn;
            c.execute(
                "DELETE FROM upload_tokens WHERE expires_ms <= ?1",
                params![now_ms as i64],
            )?;
            let removed = c.execute(
                "DELETE FROM mailbox WHERE expires_ms <= ?1",
                params![now_ms as i64],
            )?;
            c.execute(
                "DELETE FROM messages WHERE expires_ms <= ?1",
                params![now_ms as i64],
            )?;
            if removed > 0 {
                // Recounted from the mailbox when next needed.
                db.usage.clear();
            }
            Ok((removed as u64, Vec::new()))
        })
        .await
    }

    async fn put_blob(&self, id: &str, size: u64, expires_ms: u64) -> Result<(), StoreError> {
        let id = id.to_string();
        self.call(move |c| {
            c.execute(
                "INSERT INTO blobs (id, size, expires_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (id) DO UPDATE SET expires_ms = MAX(expires_ms, ?3)",
                params![id, size as i64, expires_ms as i64],
            )?;
            Ok(())
        })
        .await
    }

    async fn put_upload_token(
        &self,
        token_hash: [u8; 32],
        addr: &Addr,
        expires_ms: u64,
    ) -> Result<(), StoreError> {
        let (user, device) = addr_params(addr);
        self.call(move |c| {
            c.execute(
                "INSERT INTO upload_tokens (token_hash, user_id, device_id, expires_ms) VALUES (?1, ?2, ?3, ?4)",
                params![token_hash.to_vec(), user, device, expires_ms as i64],
            )?;
            Ok(())
        })
        .await
    }

    async fn take_upload_token(
        &self,
        token_hash: [u8; 32],
        now_ms: u64,
    ) -> Result<Option<Addr>, StoreError> {
        self.call(move |c| {
            let row: Option<(String, u32, i64)> = c
                .query_row(
                    "DELETE FROM upload_tokens WHERE token_hash = ?1 RETURNING user_id, device_id, expires_ms",
                    params![token_hash.to_vec()],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
            Ok(row
                .filter(|(_, _, exp)| *exp as u64 > now_ms)
                .map(|(user, device, _)| Addr { user, device }))
        })
        .await
    }

    async fn blob(&self, id: &str, now_ms: u64) -> Result<Option<u64>, StoreError> {
        let id = id.to_string();
        self.call(move |c| {
            Ok(c.query_row(
                "SELECT size FROM blobs WHERE id = ?1 AND expires_ms > ?2",
                params![id, now_ms as i64],
                |r| r.get::<_, i64>(0),
            )
            .optional()?
            .map(|n| n as u64))
        })
        .await
    }

    async fn expire_blobs(&self, now_ms: u64) -> Result<Vec<String>, StoreError> {
        self.call(move |c| {
            let mut stmt = c.prepare("SELECT id FROM blobs WHERE expires_ms <= ?1")?;
            let ids = stmt
                .query_map(params![now_ms as i64], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            c.execute(
                "DELETE FROM blobs WHERE expires_ms <= ?1",
                params![now_ms as i64],
            )?;
            Ok(ids)
        })
        .await
    }
}

/// What a relay database holds, read for auditing (`hush demo` prints it). Only public
/// keys, ciphertext, receipts and timestamps are there to read.
#[derive(Clone, Debug, Default)]
pub struct Inspection {
    /// Registered devices: (address, identity key).
    pub devices: Vec<(Addr, Vec<u8>)>,
    /// Signed prekeys stored.
    pub signed_prekeys: u64,
    /// One-time prekeys not yet handed out.
    pub one_time_prekeys: u64,
    /// Envelopes waiting in mailboxes: (recipient, envelope).
    pub queued: Vec<(Addr, StoredEnvelope)>,
    /// Receipts waiting for their senders.
    pub receipts: u64,
    /// Presence rows: (user, last seen ms, hides last seen).
    pub presence: Vec<(String, u64, bool)>,
    /// Blob records: (id, size).
    pub blobs: Vec<(String, u64)>,
}

/// Reads a relay database (read-only; safe while the relay runs).
pub fn inspect(path: &Path) -> Result<Inspection, StoreError> {
    let c = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let count = |sql: &str| -> Result<u64, StoreError> {
        Ok(c.query_row(sql, [], |r| r.get::<_, i64>(0))? as u64)
    };
    let mut out = Inspection {
        signed_prekeys: count("SELECT COUNT(*) FROM signed_prekeys")?,
        one_time_prekeys: count("SELECT COUNT(*) FROM one_time_prekeys")?,
        receipts: count("SELECT COUNT(*) FROM receipts")?,
        ..Inspection::default()
    };
    let mut s = c.prepare(
        "SELECT user_id, device_id, identity_key FROM devices ORDER BY user_id, device_id",
    )?;
    out.devices = s
        .query_map([], |r| {
            Ok((
                Addr {
                    user: r.get(0)?,
                    device: r.get(1)?,
                },
                r.get(2)?,
            ))
        })?
        .collect::<Result<_, _>>()?;
    let mut s = c.prepare(
        "SELECT b.user_id, b.device_id, b.envelope_id, COALESCE(b.sender_user, m.sender_user), COALESCE(b.sender_device, m.sender_device),
                COALESCE(b.message_id, m.message_id), COALESCE(b.server_ms, m.server_ms), COALESCE(b.ciphertext, m.ciphertext)
         FROM mailbox b LEFT JOIN messages m ON m.id = b.message ORDER BY b.envelope_id",
    )?;
    out.queued = s
        .query_map([], |r| {
            Ok((
                Addr {
                    user: r.get(0)?,
                    device: r.get(1)?,
                },
                StoredEnvelope {
                    envelope_id: r.get::<_, i64>(2)? as u64,
                    sender: Addr {
                        user: r.get(3)?,
                        device: r.get(4)?,
                    },
                    message_id: r.get(5)?,
                    server_ms: r.get::<_, i64>(6)? as u64,
                    ciphertext: r.get(7)?,
                },
            ))
        })?
        .collect::<Result<_, _>>()?;
    let mut s = c.prepare("SELECT user_id, last_seen_ms, hidden FROM presence ORDER BY user_id")?;
    out.presence = s
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get::<_, i64>(1)? as u64,
                r.get::<_, i64>(2)? != 0,
            ))
        })?
        .collect::<Result<_, _>>()?;
    let mut s = c.prepare("SELECT id, size FROM blobs ORDER BY id")?;
    out.blobs = s
        .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?
        .collect::<Result<_, _>>()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn database_errors_keep_their_source() {
        let e = StoreError::from(rusqlite::Error::InvalidQuery);
        let source = e
            .database_error()
            .and_then(|s| s.downcast_ref::<rusqlite::Error>());
        assert!(matches!(source, Some(rusqlite::Error::InvalidQuery)));
        assert!(std::error::Error::source(&e).is_some());
        assert_eq!(
            error_chain(&e),
            format!("database error: {}", rusqlite::Error::InvalidQuery)
        );
        // A failed batch hands every operation in it the same error.
        assert!(
            matches!(e.clone(), StoreError::Database(s) if s.to_string() == source.unwrap().to_string())
        );
    }

    fn addr(user: &str) -> Addr {
        Addr {
            user: user.into(),
            device: 1,
        }
    }

    /// A relay database from before migrations 4 and 5, with mail queued in the old layout
    /// (one single-recipient and one two-recipient message) and a receipt waiting, opened by
    /// this version: the mail and the receipt are still there, usage is counted from the
    /// mail, acknowledgements work, and new envelope and receipt ids continue right after
    /// the old sequences.
    #[tokio::test]
    async fn migrations_keep_queued_mail_and_ids() {
        let (dir, path) = scratch("migrate");
        {
            let mut c = Connection::open(&path).unwrap();
            c.execute_batch("PRAGMA journal_mode = WAL;").unwrap();
            migrate_to(&mut c, 3).unwrap();
            c.execute_batch(
                "INSERT INTO devices VALUES ('alice', 1, x'01', 0), ('bob', 1, x'02', 0), ('carol', 1, x'03', 0);
                 INSERT INTO messages VALUES (7, 'alice', 1, x'6d31', 1000, 9999999999999, x'6331', 1);
                 INSERT INTO messages VALUES (8, 'alice', 1, x'6d32', 1001, 9999999999999, x'6332', 2);
                 INSERT INTO mailbox VALUES (41, 'bob', 1, 7, 2, 9999999999999);
                 INSERT INTO mailbox VALUES (42, 'bob', 1, 8, 2, 9999999999999);
                 INSERT INTO mailbox VALUES (43, 'carol', 1, 8, 2, 9999999999999);
                 INSERT INTO mailbox_usage VALUES ('bob', 1, 2, 4), ('carol', 1, 1, 2);
                 UPDATE sqlite_sequence SET seq = 1000 WHERE name = 'mailbox';
                 INSERT INTO receipts VALUES (500, 'alice', 1, 1, 'dave', 1, x'6d30', 900);
                 UPDATE sqlite_sequence SET seq = 600 WHERE name = 'receipts';",
            )
            .unwrap();
        }
        // A clock of 0: the ids come from the old sequences alone.
        let store = SqliteStore::open_at(&path, 0).unwrap();
        let bob = store.pending(&addr("bob"), 0, 10, 2000).await.unwrap();
        let got: Vec<_> = bob
            .iter()
            .map(|e| (e.envelope_id, e.message_id.clone(), e.ciphertext.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                (41, b"m1".to_vec(), b"c1".to_vec()),
                (42, b"m2".to_vec(), b"c2".to_vec())
            ]
        );
        assert_eq!(bob[0].sender, addr("alice"));
        // Bob's mailbox holds 2 envelopes: with a cap of 3, one more fits and then no more.
        let limits = MailboxLimits {
            max_count: 3,
            max_bytes: 1 << 20,
            ttl_ms: 1000,
        };
        store
            .enqueue(
                &addr("alice"),
                vec![addr("bob")],
                b"m3".to_vec(),
                b"c3".to_vec(),
                2000,
                limits,
            )
            .await
            .unwrap();
        assert!(matches!(
            store
                .enqueue(
                    &addr("alice"),
                    vec![addr("bob")],
                    b"m4".to_vec(),
                    b"c4".to_vec(),
                    2000,
                    limits
                )
                .await,
            Err(StoreError::MailboxFull(_))
        ));
        let bob = store.pending(&addr("bob"), 42, 10, 2000).await.unwrap();
        assert_eq!(bob.len(), 1);
        assert_eq!(
            bob[0].envelope_id, 1001,
            "ids continue after the old sequence"
        );
        assert_eq!(bob[0].ciphertext, b"c3");
        // Acknowledging the shared message for Bob keeps it for Carol; both acks free it.
        assert_eq!(
            store.ack(&addr("bob"), vec![41, 42], 3000).await.unwrap(),
            vec![addr("alice")]
        );
        let carol = store.pending(&addr("carol"), 0, 10, 3000).await.unwrap();
        assert_eq!(carol.len(), 1);
        assert_eq!(carol[0].ciphertext, b"c2");
        store.ack(&addr("carol"), vec![43], 3000).await.unwrap();
        let receipts = store.receipts(&addr("alice"), 0, 10).await.unwrap();
        let ids: Vec<u64> = receipts.iter().map(|r| r.receipt_id).collect();
        assert_eq!(ids, vec![500, 601, 602, 603]);
        assert_eq!(receipts[0].message_id, b"m0");
        let seen = inspect(&path).unwrap();
        assert_eq!(seen.queued.len(), 1);
        drop(store);
        let c = Connection::open(&path).unwrap();
        let messages: i64 = c
            .query_row("SELECT COUNT(*) FROM messages", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            messages, 0,
            "shared messages freed once every recipient acknowledged"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// An empty directory for one test's database, and the database's path in it.
    fn scratch(name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("hush-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("relay.db");
        (dir, path)
    }

    /// A new store at `path` with the clock at 1 ms, where Alice and Bob are registered.
    async fn store_with_alice_and_bob(path: &Path) -> SqliteStore {
        let store = SqliteStore::open_at(path, 1).unwrap();
        for who in ["alice", "bob"] {
            assert!(store.register(&addr(who), &[1; 32], 1).await.unwrap());
        }
        store
    }

    async fn send_to_bob(store: &SqliteStore, n: usize) {
        let limits = MailboxLimits {
            max_count: 1000,
            max_bytes: 1 << 20,
            ttl_ms: 1 << 40,
        };
        for i in 0..n {
            store
                .enqueue(
                    &addr("alice"),
                    vec![addr("bob")],
                    vec![i as u8],
                    b"c".to_vec(),
                    1,
                    limits,
                )
                .await
                .unwrap();
        }
    }

    async fn queued_for_bob(store: &SqliteStore) -> Vec<u64> {
        let queued = store.pending(&addr("bob"), 0, 1000, 1).await.unwrap();
        queued.iter().map(|e| e.envelope_id).collect()
    }

    /// Closes `store` and waits until its database thread has closed the database (the
    /// WAL goes when the last connection closes).
    async fn close(store: SqliteStore, path: &Path) {
        drop(store);
        let wal = path.with_extension("db-wal");
        for _ in 0..500 {
            if !wal.exists() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the database thread did not close the database");
    }

    /// Envelope ids are never handed out twice: not after a restart with every envelope
    /// acknowledged (the high-water mark), and not after a restore from a copy made before
    /// later envelopes were sent (the clock at start). The clock is given in milliseconds;
    /// ids start at 1,024 per millisecond.
    #[tokio::test]
    async fn ids_are_not_reused_after_a_restart_or_a_restore() {
        let (dir, path) = scratch("ids");
        let backup = dir.join("backup.db");

        let store = store_with_alice_and_bob(&path).await;
        send_to_bob(&store, 1).await;
        assert_eq!(queued_for_bob(&store).await, vec![1024]);
        Connection::open(&path)
            .unwrap()
            .execute("VACUUM INTO ?1", params![backup.to_str().unwrap()])
            .unwrap();
        send_to_bob(&store, 9).await;
        let handed_out = queued_for_bob(&store).await;
        assert_eq!(handed_out, (1024..1034).collect::<Vec<_>>());
        store
            .ack(&addr("bob"), handed_out.clone(), 1)
            .await
            .unwrap();
        assert!(queued_for_bob(&store).await.is_empty());
        close(store, &path).await;

        // Restarted with the same clock and an empty mailbox: the mark keeps ids going up.
        let store = SqliteStore::open_at(&path, 1).unwrap();
        send_to_bob(&store, 1).await;
        let after_restart = queued_for_bob(&store).await;
        assert_eq!(after_restart.len(), 1);
        assert!(after_restart[0] > 1033, "{after_restart:?}");
        close(store, &path).await;

        // Restored from the copy, which holds envelope 1024 and a mark below 1034, a
        // millisecond later: ids start from the clock.
        std::fs::copy(&backup, &path).unwrap();
        let store = SqliteStore::open_at(&path, 2).unwrap();
        assert_eq!(queued_for_bob(&store).await, vec![1024]);
        send_to_bob(&store, 1).await;
        let after_restore = queued_for_bob(&store).await;
        assert_eq!(after_restore[0], 1024);
        assert!(after_restore[1] > after_restart[0], "{after_restore:?}");
        close(store, &path).await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Writers that never pause (eight tasks each keeping a send of 32 envelopes queued)
    /// for three seconds: the WAL is written many times its reset size, and its file stays
    /// small, because the writer finishes a checkpoint itself once the log is long.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_stays_bounded_under_writes_that_never_pause() {
        let (dir, path) = scratch("wal");
        let wal = path.with_extension("db-wal");
        let store = store_with_alice_and_bob(&path).await;
        let limits = MailboxLimits {
            max_count: u64::MAX,
            max_bytes: u64::MAX,
            ttl_ms: 1 << 40,
        };
        let until = std::time::Instant::now() + std::time::Duration::from_secs(3);
        let mut writers = vec![];
        for _ in 0..8 {
            let store = store.clone();
            writers.push(tokio::spawn(async move {
                let mut bytes = 0u64;
                while std::time::Instant::now() < until {
                    let batch = (0..32)
                        .map(|i| Outgoing {
                            recipients: vec![addr("bob")],
                            message_id: vec![i],
                            ciphertext: vec![0x42; 1024],
                        })
                        .collect();
                    for r in store.enqueue_many(&addr("alice"), batch, 1, limits).await {
                        r.unwrap();
                    }
                    bytes += 32 * 1024;
                }
                bytes
            }));
        }
        let mut largest = 0;
        while std::time::Instant::now() < until {
            largest = largest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let mut written = 0;
        for w in writers {
            written += w.await.unwrap();
        }
        let reset_bytes = WAL_RESET_FRAMES as u64 * 4096;
        assert!(written > 20 * reset_bytes, "only {written} bytes written");
        // Without the writer's checkpoints the WAL holds more than what was written.
        assert!(
            largest < written / 4,
            "WAL reached {largest} bytes after {written} bytes of envelopes"
        );
        close(store, &path).await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
