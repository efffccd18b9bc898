//! Group commit on PostgreSQL: the hot path of many connections (sends, acknowledgements,
//! receipt acknowledgements, presence) in one transaction and a few round trips, as the
//! SQLite store groups its commits.
//!
//! A batch locks what it writes, checks, decides in memory, and writes each table with one
//! statement over arrays:
//!
//! 1. the advisory lock of every mailbox it sends to ([`lock_key`] `"mailbox"`), then of
//!    every mailbox it acknowledges in (`"acks"`), each in key order;
//! 2. registrations, mailbox usage (count, bytes, last envelope id) and each sender's share
//!    of each mailbox it sends to, read; the acknowledged rows deleted;
//! 3. the advisory lock of every receipt queue it adds to (`"receipts"`), then of every queue
//!    it acknowledges in (`"receipt-acks"`), each in key order; the acknowledged receipts
//!    deleted, and the counts of the queues it adds to read;
//! 4. every decision made in operation order, as the SQLite store makes them, and the ids
//!    drawn from the sequences (so a mailbox's ids ascend in commit order: they are drawn
//!    under its lock);
//! 5. the rows written, shared messages' reference counts updated (their rows locked in id
//!    order), presence written (in user order), and one `COMMIT`.
//!
//! Every transaction that takes more than one of these takes them in that order (the four
//! classes of advisory locks, each in key order, then message rows in id order, then count
//! rows and presence rows in key order), so batches on any number of nodes never deadlock.
//! The mailbox and receipt rows an acknowledgement deletes, and shared messages it alone
//! referred to, are rows nobody else may touch without first taking the same lock.
//!
//! Sending to a mailbox and acknowledging in it take different locks, so one node's sends do
//! not wait for another node's acknowledgements of the same mailbox (nor a queue's new
//! receipts for their acknowledgements): an acknowledgement only deletes rows it alone may
//! delete (its device's, under `"acks"`) and lowers counts, written as differences
//! (`count = count + delta`) in key order. A send that read a count before such a decrease
//! committed sees its mailbox fuller than it is, never emptier.
//!
//! Only after the commit does anyone get an answer: a failed batch fails every operation in
//! it, and nobody is told "sent" for something not stored.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, OnceLock};

use deadpool_postgres::ClientWrapper;
use deadpool_postgres::Pool;
use tokio::sync::{Mutex, mpsc, oneshot};

use super::{db, dev, ms, unavailable};
use crate::store::{
    Addr, Delivery, DeliveryHook, MailboxLimits, Outgoing, PushedMessage, ReceiptLimits, Refusals,
    StoreError, StoredReceipt,
};

/// Most lock keys (mailboxes and receipt queues) one batch takes: a batch stops taking
/// operations past it (PostgreSQL's shared lock table holds `max_locks_per_transaction ×
/// max_connections` locks, 6,400 with stock settings).
pub const MAX_BATCH_LOCKS: usize = 1024;
/// Most operations in one batch.
pub const MAX_BATCH_OPS: usize = 512;
/// Most ciphertext bytes in one batch (the store splits a larger send of one connection).
pub const MAX_BATCH_BYTES: usize = 32 << 20;
/// Longest a batch may take before its operations fail with
/// [`StoreError::Unavailable`](crate::store::StoreError::Unavailable).
pub const BATCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Batches in flight at once per store (one with a pool of fewer than 4 connections); how
/// operations are spread over them is [`Routing`](super::Routing).
pub(super) const BATCHERS: usize = 2;

/// The advisory lock key of `addr`'s mailbox for sending to it (`class` `"mailbox"`) or for
/// acknowledging in it (`"acks"`), or of its receipt queue for adding (`"receipts"`) or
/// acknowledging (`"receipt-acks"`): FNV-1a (64 bits) of `class ‖ "/" ‖ user ‖ "/" ‖
/// u32be(device)`. Every node computes the same key. A transaction that takes several classes
/// takes them in [`CLASSES`] order, each class's keys ascending.
pub(super) fn lock_key(class: &str, addr: &Addr) -> i64 {
    key_of(class, &addr.user, addr.device)
}

/// [`lock_key`] of user `user`'s device `device`.
fn key_of(class: &str, user: &str, device: u32) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let bytes = class
        .bytes()
        .chain([b'/'])
        .chain(user.bytes())
        .chain([b'/'])
        .chain(device.to_be_bytes());
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h as i64
}

/// The advisory lock classes, in the order every transaction takes them.
pub(super) const CLASSES: [&str; 4] = ["mailbox", "acks", "receipts", "receipt-acks"];

/// Locks the keys in the order given, one at a time (held to the end of the transaction).
pub(super) const LOCK: &str = "SELECT hush_lock($1::BIGINT[])";

/// One operation waiting for a batch.
pub(super) enum Op {
    /// [`Store::enqueue_many`](crate::store::Store::enqueue_many).
    Enqueue {
        sender: Addr,
        batch: Vec<Outgoing>,
        now_ms: u64,
        limits: MailboxLimits,
        reply: oneshot::Sender<Vec<Result<Refusals, StoreError>>>,
    },
    /// [`Store::ack`](crate::store::Store::ack); also answers the receipts it could not
    /// queue because their owner is not registered in this database ([`Unplaced`]).
    Ack {
        addr: Addr,
        ids: Vec<u64>,
        now_ms: u64,
        limits: ReceiptLimits,
        reply: oneshot::Sender<Result<Acknowledged, StoreError>>,
    },
    /// Queues receipts made on another shard (dropped for owners not registered here).
    Receipts {
        list: Vec<Unplaced>,
        limits: ReceiptLimits,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// [`Store::ack_receipts`](crate::store::Store::ack_receipts).
    AckReceipts {
        addr: Addr,
        ids: Vec<u64>,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// [`Store::touch`](crate::store::Store::touch).
    Touch {
        user: String,
        now_ms: u64,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
}

impl Op {
    /// How many lock keys it may take.
    pub(super) fn locks(&self) -> usize {
        match self {
            Self::Enqueue { batch, .. } => batch.iter().map(|o| o.recipients.len()).sum(),
            Self::Ack { ids, .. } => 1 + ids.len(),
            Self::AckReceipts { .. } => 1,
            Self::Receipts { list, .. } => list.len(),
            Self::Touch { .. } => 0,
        }
    }

    /// Its queue of `lanes` ([`Routing::ByMailbox`](super::Routing::ByMailbox)): that of
    /// the first mailbox it writes (a send's first recipient, an acknowledging device, the
    /// owner of a receipt queue it writes), or of the user whose presence it writes. The
    /// same mailbox is always in the same lane.
    pub(super) fn lane(&self, lanes: usize) -> usize {
        if lanes <= 1 {
            return 0;
        }
        let key = match self {
            Self::Enqueue { sender, batch, .. } => batch
                .iter()
                .flat_map(|o| &o.recipients)
                .next()
                .map_or_else(|| lock_key("mailbox", sender), |r| lock_key("mailbox", r)),
            Self::Ack { addr, .. } | Self::AckReceipts { addr, .. } => lock_key("mailbox", addr),
            Self::Receipts { list, .. } => {
                list.first().map_or(0, |u| lock_key("mailbox", &u.owner))
            }
            Self::Touch { user, .. } => key_of("mailbox", user, 0),
        };
        // FNV-1a's low bits are a parity of the input's: take high bits of a mix instead.
        let mixed = (key as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32;
        (mixed % lanes as u64) as usize
    }

    /// How many ciphertext bytes it writes.
    fn bytes(&self) -> usize {
        match self {
            Self::Enqueue { batch, .. } => batch.iter().map(|o| o.ciphertext.len()).sum(),
            _ => 0,
        }
    }

    fn fail(self, e: &StoreError) {
        match self {
            Self::Enqueue { batch, reply, .. } => {
                let _ = reply.send(batch.iter().map(|_| Err(e.clone())).collect());
            }
            Self::Ack { reply, .. } => {
                let _ = reply.send(Err(e.clone()));
            }
            Self::AckReceipts { reply, .. }
            | Self::Touch { reply, .. }
            | Self::Receipts { reply, .. } => {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }

    fn answer(self, a: Answer) {
        match (self, a) {
            (Self::Enqueue { reply, .. }, Answer::Enqueue(r)) => {
                let _ = reply.send(r);
            }
            (Self::Ack { reply, .. }, Answer::Ack(senders, unplaced)) => {
                let _ = reply.send(Ok((senders, unplaced)));
            }
            (
                Self::AckReceipts { reply, .. }
                | Self::Touch { reply, .. }
                | Self::Receipts { reply, .. },
                _,
            ) => {
                let _ = reply.send(Ok(()));
            }
            (op, _) => op.fail(&StoreError::CommitFailed),
        }
    }
}

enum Answer {
    Enqueue(Vec<Result<Refusals, StoreError>>),
    Ack(Vec<Addr>, Vec<Unplaced>),
    Done,
}

/// What an acknowledgement answers: the senders to wake, and the receipts for senders not
/// registered in this database.
pub(crate) type Acknowledged = (Vec<Addr>, Vec<Unplaced>);

/// A "delivered" receipt an acknowledgement made for a sender not registered in this
/// database: on a sharded relay, one whose sender lives on another shard (which queues it
/// with [`Op::Receipts`]).
#[derive(Clone, Debug)]
pub(crate) struct Unplaced {
    /// The sender of the acknowledged envelope, who gets the receipt.
    pub(crate) owner: Addr,
    /// The device that acknowledged it.
    pub(crate) recipient: Addr,
    /// The envelope's message id.
    pub(crate) message_id: Vec<u8>,
    /// When it was acknowledged (ms since the Unix epoch).
    pub(crate) at_ms: u64,
}

/// What the batchers share: the queue of operations, the pool, the delivery hook.
pub(super) struct Batcher {
    pub(super) pool: Pool,
    pub(super) ops: Mutex<Waiting>,
    pub(super) hook: Arc<OnceLock<DeliveryHook>>,
}

/// The operations waiting, and one taken off the channel that did not fit the last batch.
pub(super) struct Waiting {
    pub(super) rx: mpsc::Receiver<Op>,
    pub(super) held: Option<Op>,
}

/// Takes operations as they come (whatever queued while the last batch ran), commits them
/// together, then answers. Ends when every sender of operations is gone.
pub(super) async fn run(b: Arc<Batcher>) {
    loop {
        let ops = {
            let mut q = b.ops.lock().await;
            let first = match q.held.take() {
                Some(op) => op,
                None => match q.rx.recv().await {
                    Some(op) => op,
                    None => return,
                },
            };
            let (mut locks, mut bytes) = (first.locks(), first.bytes());
            let mut ops = vec![first];
            while ops.len() < MAX_BATCH_OPS {
                let Ok(op) = q.rx.try_recv() else {
                    break;
                };
                // An operation that would take the batch past a limit waits for the next.
                if locks + op.locks() > MAX_BATCH_LOCKS || bytes + op.bytes() > MAX_BATCH_BYTES {
                    q.held = Some(op);
                    break;
                }
                locks += op.locks();
                bytes += op.bytes();
                ops.push(op);
            }
            ops
        };
        let started = std::time::Instant::now();
        match commit(&b.pool, &ops).await {
            Ok((answers, deliveries)) => {
                tracing::debug!(
                    ops = ops.len(),
                    deliveries = deliveries.len(),
                    us = started.elapsed().as_micros() as u64,
                    "batch committed"
                );
                if let Some(hook) = b.hook.get()
                    && !deliveries.is_empty()
                {
                    hook(deliveries);
                }
                for (op, a) in ops.into_iter().zip(answers) {
                    op.answer(a);
                }
            }
            Err(e) => {
                tracing::warn!(error = %crate::store::error_chain(&e), ops = ops.len(), "batch failed");
                for op in ops {
                    op.fail(&e);
                }
            }
        }
    }
}

/// A device's mailbox as the batch sees it: read at its start, then this batch's sends.
#[derive(Clone, Copy, Default)]
struct Usage {
    registered: bool,
    count: u64,
    bytes: u64,
    last_id: u64,
}

/// One sending user's share of one mailbox, as the batch sees it.
#[derive(Clone, Copy, Default)]
struct Share {
    count: u64,
    bytes: u64,
}

/// A change to a count row, written as a difference (`count = count + delta`, rows in key
/// order), so sends and acknowledgements under different locks may both change it.
#[derive(Clone, Copy, Default)]
struct Delta {
    count: i64,
    bytes: i64,
    last_id: i64,
}

/// A device's receipt queue.
#[derive(Clone, Copy, Default)]
struct Queue {
    count: u64,
    last_id: u64,
}

/// An acknowledged (and deleted) mailbox row.
struct Acked {
    op: usize,
    envelope_id: u64,
    message: Option<i64>,
    size: u64,
    sender: Addr,
    message_id: Vec<u8>,
    refs: i64,
}

/// An envelope to store, for the recipients that had room.
struct Stored<'a> {
    sender: &'a Addr,
    out: &'a Outgoing,
    now_ms: u64,
    expires_ms: u64,
    to: Vec<&'a Addr>,
}

type Param<'a> = &'a (dyn tokio_postgres::types::ToSql + Sync);

/// Runs a prepared statement, or answers no rows without a round trip if it is `None`. Statements are prepared
/// before a round's queries are sent, so that each round goes out in one write and runs in
/// the order written (PostgreSQL runs a connection's statements one after another).
async fn rows(
    tx: &ClientWrapper,
    statement: Option<&tokio_postgres::Statement>,
    params: &[Param<'_>],
) -> Result<Vec<tokio_postgres::Row>, StoreError> {
    match statement {
        Some(st) => tx.query(st, params).await.map_err(db),
        None => Ok(Vec::new()),
    }
}

/// [`rows`] as a future that owns its parameter list (for `try_join!`).
macro_rules! run {
    ($tx:expr, $st:expr, $($p:expr),* $(,)?) => {
        async { rows($tx, $st.as_ref(), &[$($p),*]).await }
    };
}

/// Prepares (or takes from the connection's cache) the statements a round needs.
async fn prepare<const N: usize>(
    tx: &ClientWrapper,
    sql: [(&str, bool); N],
) -> Result<[Option<tokio_postgres::Statement>; N], StoreError> {
    let mut out: [Option<tokio_postgres::Statement>; N] = std::array::from_fn(|_| None);
    for (slot, (text, needed)) in out.iter_mut().zip(sql) {
        if needed {
            *slot = Some(tx.prepare_cached(text).await.map_err(db)?);
        }
    }
    Ok(out)
}

/// Column `i` of `r`, a count or id: never negative (a count that drifted below zero reads
/// as zero), never a panic on an unexpected type or NULL.
fn unsigned(r: &tokio_postgres::Row, i: usize) -> Result<u64, StoreError> {
    Ok(r.try_get::<_, i64>(i).map_err(db)?.max(0) as u64)
}

/// The row `n` (1-based, from `WITH ORDINALITY`) names in `list`.
fn nth<T: Copy>(list: &[T], n: i64) -> Result<T, StoreError> {
    usize::try_from(n)
        .ok()
        .and_then(|n| n.checked_sub(1))
        .and_then(|i| list.get(i).copied())
        .ok_or_else(|| db(std::io::Error::other("row number out of range")))
}

const USAGE: &str =
    "SELECT t.n, EXISTS (SELECT 1 FROM devices d WHERE d.user_id = t.uid AND d.device_id = t.did),
        COALESCE(u.count, 0), COALESCE(u.bytes, 0), COALESCE(u.last_id, 0)
 FROM UNNEST($1::TEXT[], $2::BIGINT[]) WITH ORDINALITY AS t(uid, did, n)
 LEFT JOIN mailbox_usage u ON u.user_id = t.uid AND u.device_id = t.did";
const SHARES: &str = "SELECT t.n, COALESCE(s.count, 0), COALESCE(s.bytes, 0)
 FROM UNNEST($1::TEXT[], $2::BIGINT[], $3::TEXT[]) WITH ORDINALITY AS t(uid, did, sid, n)
 LEFT JOIN mailbox_share s ON s.user_id = t.uid AND s.device_id = t.did AND s.sender_user = t.sid";
const ACK: &str = "WITH t AS (SELECT * FROM UNNEST($1::TEXT[], $2::BIGINT[], $3::BIGINT[]) WITH ORDINALITY AS t(uid, did, eid, n))
 DELETE FROM mailbox mb USING t
 WHERE mb.envelope_id = t.eid AND mb.user_id = t.uid AND mb.device_id = t.did
 RETURNING t.n, mb.envelope_id, mb.message, mb.size,
   COALESCE(mb.sender_user, (SELECT m.sender_user FROM messages m WHERE m.id = mb.message)),
   COALESCE(mb.sender_device, (SELECT m.sender_device FROM messages m WHERE m.id = mb.message)),
   COALESCE(mb.message_id, (SELECT m.message_id FROM messages m WHERE m.id = mb.message)),
   COALESCE((SELECT m.refs FROM messages m WHERE m.id = mb.message), 1)";
const ACK_RECEIPTS: &str = "DELETE FROM receipts r USING UNNEST($1::TEXT[], $2::BIGINT[], $3::BIGINT[]) AS t(uid, did, rid)
 WHERE r.receipt_id = t.rid AND r.user_id = t.uid AND r.device_id = t.did
 RETURNING r.user_id, r.device_id";
const QUEUES: &str = "SELECT t.n, COALESCE(q.count, 0), COALESCE(q.last_id, 0)
 FROM UNNEST($1::TEXT[], $2::BIGINT[]) WITH ORDINALITY AS t(uid, did, n)
 JOIN devices d ON d.user_id = t.uid AND d.device_id = t.did
 LEFT JOIN receipt_queue q ON q.user_id = t.uid AND q.device_id = t.did";
const IDS: &str =
    "SELECT ARRAY(SELECT nextval('messages_id_seq') FROM generate_series(1, $1::BIGINT)),
        ARRAY(SELECT nextval('mailbox_envelope_id_seq') FROM generate_series(1, $2::BIGINT)),
        ARRAY(SELECT nextval('receipts_receipt_id_seq') FROM generate_series(1, $3::BIGINT))";
const INSERT_MESSAGES: &str = "INSERT INTO messages (id, sender_user, sender_device, message_id, server_ms, expires_ms, ciphertext, refs, franking)
 SELECT * FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::BIGINT[], $4::BYTEA[], $5::BIGINT[], $6::BIGINT[], $7::BYTEA[], $8::BIGINT[], $9::BYTEA[])";
const INSERT_MAILBOX: &str = "INSERT INTO mailbox (envelope_id, user_id, device_id, message, size, expires_ms,
                      sender_user, sender_device, message_id, server_ms, ciphertext, franking)
 SELECT * FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::BIGINT[], $4::BIGINT[], $5::BIGINT[], $6::BIGINT[],
                      $7::TEXT[], $8::BIGINT[], $9::BYTEA[], $10::BIGINT[], $11::BYTEA[], $12::BYTEA[])";
const LOCK_MESSAGES: &str =
    "SELECT id FROM messages WHERE id = ANY($1::BIGINT[]) ORDER BY id FOR UPDATE";
const UNREFERENCE: &str = "UPDATE messages m SET refs = m.refs - t.n
 FROM UNNEST($1::BIGINT[], $2::BIGINT[]) AS t(id, n) WHERE m.id = t.id";
// A separate statement: a row a statement's `WITH` updated cannot be deleted by the same
// statement (PostgreSQL ignores the second change).
const UNREFERENCED: &str = "DELETE FROM messages WHERE id = ANY($1::BIGINT[]) AND refs <= 0";
const DELETE_MESSAGES: &str = "DELETE FROM messages WHERE id = ANY($1::BIGINT[])";
const INSERT_RECEIPTS: &str = "INSERT INTO receipts (receipt_id, user_id, device_id, read, recipient_user, recipient_device, message_id, at_ms)
 SELECT r, u, d, FALSE, ru, rd, m, a
 FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::BIGINT[], $4::TEXT[], $5::BIGINT[], $6::BYTEA[], $7::BIGINT[])
   AS t(r, u, d, ru, rd, m, a)";
const USAGE_DELTAS: &str = "INSERT INTO mailbox_usage (user_id, device_id, count, bytes, last_id)
 SELECT * FROM UNNEST($1::TEXT[], $2::BIGINT[], $3::BIGINT[], $4::BIGINT[], $5::BIGINT[])
 ON CONFLICT (user_id, device_id) DO UPDATE
   SET count = mailbox_usage.count + EXCLUDED.count, bytes = mailbox_usage.bytes + EXCLUDED.bytes,
       last_id = GREATEST(mailbox_usage.last_id, EXCLUDED.last_id)";
const SHARE_DELTAS: &str =
    "INSERT INTO mailbox_share (user_id, device_id, sender_user, count, bytes)
 SELECT * FROM UNNEST($1::TEXT[], $2::BIGINT[], $3::TEXT[], $4::BIGINT[], $5::BIGINT[])
 ON CONFLICT (user_id, device_id, sender_user) DO UPDATE
   SET count = mailbox_share.count + EXCLUDED.count, bytes = mailbox_share.bytes + EXCLUDED.bytes";
const EMPTY_SHARES: &str =
    "DELETE FROM mailbox_share s USING UNNEST($1::TEXT[], $2::BIGINT[], $3::TEXT[]) AS t(u, d, x)
 WHERE s.user_id = t.u AND s.device_id = t.d AND s.sender_user = t.x AND s.count <= 0";
const QUEUE_DELTAS: &str = "INSERT INTO receipt_queue (user_id, device_id, count, last_id)
 SELECT * FROM UNNEST($1::TEXT[], $2::BIGINT[], $3::BIGINT[], $4::BIGINT[])
 ON CONFLICT (user_id, device_id) DO UPDATE
   SET count = receipt_queue.count + EXCLUDED.count, last_id = GREATEST(receipt_queue.last_id, EXCLUDED.last_id)";
const PRESENCE: &str = "INSERT INTO presence (user_id, last_seen_ms, hidden)
 SELECT u, t, FALSE FROM UNNEST($1::TEXT[], $2::BIGINT[]) WITH ORDINALITY AS x(u, t, n) ORDER BY n
 ON CONFLICT (user_id) DO UPDATE SET last_seen_ms = GREATEST(presence.last_seen_ms, EXCLUDED.last_seen_ms)";

/// The batch's `BEGIN`: the isolation it relies on (each statement sees what committed before
/// it, the counts included, once it holds the locks), whatever the server's default, and a
/// statement timeout a little under [`BATCH_TIMEOUT`], so that the server itself cancels a
/// stuck statement and releases the batch's locks.
const BEGIN: &str = "BEGIN ISOLATION LEVEL READ COMMITTED; SET LOCAL statement_timeout = 9000";

/// `BEGIN` or `COMMIT`, sent in a round's pipeline.
async fn control(tx: &ClientWrapper, sql: &str) -> Result<(), StoreError> {
    tx.simple_query(sql).await.map_err(db).map(drop)
}

/// Commits `ops` in one transaction. On any failure the transaction is rolled back (and a
/// connection that cannot roll back leaves the pool), so the batch wrote nothing.
async fn commit(pool: &Pool, ops: &[Op]) -> Result<(Vec<Answer>, Vec<Delivery>), StoreError> {
    let client = pool.get().await.map_err(unavailable)?;
    let outcome = tokio::time::timeout(BATCH_TIMEOUT, transaction(&client, ops)).await;
    match outcome {
        Ok(Ok(done)) => Ok(done),
        Err(elapsed) => {
            // No answer: the connection's state is unknown, so it leaves the pool (closing it
            // ends the transaction on the server).
            drop(deadpool_postgres::Object::take(client));
            Err(unavailable(elapsed))
        }
        Ok(Err(e)) => {
            if client.simple_query("ROLLBACK").await.is_err() {
                drop(deadpool_postgres::Object::take(client));
            }
            Err(e)
        }
    }
}

/// The batch's transaction, in three pipelined rounds: `BEGIN` and the reads under the
/// mailbox locks; the receipt locks and the ids; the writes and `COMMIT`. Decisions see the
/// counts as the batch found them plus its own sends (an acknowledgement frees room for the
/// next batch, not for a send beside it in this one).
async fn transaction(
    tx: &ClientWrapper,
    ops: &[Op],
) -> Result<(Vec<Answer>, Vec<Delivery>), StoreError> {
    // Round 1: the locks of the mailboxes sent to, then acknowledged in; registrations, usage
    // and shares of every mailbox sent to; the acknowledged rows deleted.
    let mut mailboxes: BTreeSet<&Addr> = BTreeSet::new();
    let mut acking: BTreeSet<&Addr> = BTreeSet::new();
    let mut pairs: BTreeSet<(&Addr, &str)> = BTreeSet::new();
    let mut seen = std::collections::HashSet::new();
    let (mut ack_op, mut ack_users, mut ack_devices, mut ack_ids) =
        (vec![], vec![], vec![], vec![]);
    for (i, op) in ops.iter().enumerate() {
        match op {
            Op::Enqueue { sender, batch, .. } => {
                for r in batch.iter().flat_map(|o| &o.recipients) {
                    mailboxes.insert(r);
                    pairs.insert((r, sender.user.as_str()));
                }
            }
            Op::Ack { addr, ids, .. } => {
                for &id in ids {
                    if seen.insert((addr, id)) {
                        acking.insert(addr);
                        ack_op.push(i);
                        ack_users.push(addr.user.as_str());
                        ack_devices.push(dev(addr));
                        ack_ids.push(ms(id));
                    }
                }
            }
            _ => {}
        }
    }
    let mailboxes: Vec<&Addr> = mailboxes.into_iter().collect();
    let pairs: Vec<(&Addr, &str)> = pairs.into_iter().collect();
    let mut keys = sorted_keys(mailboxes.iter().map(|a| lock_key("mailbox", a)));
    keys.extend(sorted_keys(acking.iter().map(|a| lock_key("acks", a))));
    let m_users: Vec<&str> = mailboxes.iter().map(|a| a.user.as_str()).collect();
    let m_devices: Vec<i64> = mailboxes.iter().map(|a| dev(a)).collect();
    let p_users: Vec<&str> = pairs.iter().map(|(a, _)| a.user.as_str()).collect();
    let p_devices: Vec<i64> = pairs.iter().map(|(a, _)| dev(a)).collect();
    let p_senders: Vec<&str> = pairs.iter().map(|(_, s)| *s).collect();
    let [lock, usage_st, shares_st, ack_st] = prepare(
        tx,
        [
            (LOCK, !keys.is_empty()),
            (USAGE, !mailboxes.is_empty()),
            (SHARES, !pairs.is_empty()),
            (ACK, !ack_ids.is_empty()),
        ],
    )
    .await?;
    let (_, _, usage_rows, share_rows, acked_rows) = futures_util::try_join!(
        control(tx, BEGIN),
        run!(tx, lock, &keys),
        run!(tx, usage_st, &m_users, &m_devices),
        run!(tx, shares_st, &p_users, &p_devices, &p_senders),
        run!(tx, ack_st, &ack_users, &ack_devices, &ack_ids),
    )?;
    let mut usage: HashMap<&Addr, Usage> = HashMap::with_capacity(mailboxes.len());
    for r in usage_rows {
        usage.insert(
            nth(&mailboxes, r.try_get(0).map_err(db)?)?,
            Usage {
                registered: r.try_get(1).map_err(db)?,
                count: unsigned(&r, 2)?,
                bytes: unsigned(&r, 3)?,
                last_id: unsigned(&r, 4)?,
            },
        );
    }
    let mut shares: HashMap<(&Addr, &str), Share> = HashMap::with_capacity(pairs.len());
    for r in share_rows {
        shares.insert(
            nth(&pairs, r.try_get(0).map_err(db)?)?,
            Share {
                count: unsigned(&r, 1)?,
                bytes: unsigned(&r, 2)?,
            },
        );
    }
    let mut acked = Vec::with_capacity(acked_rows.len());
    for r in acked_rows {
        acked.push(Acked {
            op: nth(&ack_op, r.try_get(0).map_err(db)?)?,
            envelope_id: unsigned(&r, 1)?,
            message: r.try_get(2).map_err(db)?,
            size: unsigned(&r, 3)?,
            sender: Addr {
                user: r.try_get(4).map_err(db)?,
                device: unsigned(&r, 5)? as u32,
            },
            message_id: r.try_get(6).map_err(db)?,
            refs: r.try_get(7).map_err(db)?,
        });
    }
    acked.sort_by_key(|a| (a.op, a.envelope_id));

    // Sends decided, in operation order.
    let mut answers: Vec<Option<Answer>> = Vec::with_capacity(ops.len());
    let mut stored: Vec<Stored<'_>> = Vec::new();
    let mut usage_delta: HashMap<&Addr, Delta> = HashMap::new();
    let mut share_delta: HashMap<(&Addr, &str), Delta> = HashMap::new();
    for op in ops {
        let Op::Enqueue {
            sender,
            batch,
            now_ms,
            limits,
            ..
        } = op
        else {
            answers.push(None);
            continue;
        };
        let mut results = Vec::with_capacity(batch.len());
        for out in batch {
            match decide(&mut usage, &mut shares, sender, out, *limits) {
                Ok((refused, to)) => {
                    let size = out.ciphertext.len() as i64;
                    for &r in &to {
                        let d = usage_delta.entry(r).or_default();
                        d.count += 1;
                        d.bytes += size;
                        let d = share_delta.entry((r, sender.user.as_str())).or_default();
                        d.count += 1;
                        d.bytes += size;
                    }
                    if !to.is_empty() {
                        stored.push(Stored {
                            sender,
                            out,
                            now_ms: *now_ms,
                            expires_ms: now_ms.saturating_add(limits.ttl_ms),
                            to,
                        });
                    }
                    results.push(Ok(refused));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        answers.push(Some(Answer::Enqueue(results)));
    }
    for a in &acked {
        if let Op::Ack { addr, .. } = &ops[a.op] {
            let d = usage_delta.entry(addr).or_default();
            d.count -= 1;
            d.bytes -= a.size as i64;
            let d = share_delta
                .entry((addr, a.sender.user.as_str()))
                .or_default();
            d.count -= 1;
            d.bytes -= a.size as i64;
        }
    }

    // Round 2: the receipt-queue locks; acknowledged receipts deleted; the queues read; ids
    // drawn (under the locks, so each mailbox's and queue's ids ascend in commit order; at
    // most one receipt per acknowledged envelope).
    let mut owners: BTreeSet<&Addr> = acked.iter().map(|a| &a.sender).collect();
    let mut receipt_acking: BTreeSet<&Addr> = BTreeSet::new();
    let (mut r_users, mut r_devices, mut r_ids) = (vec![], vec![], vec![]);
    let mut forwarded = 0;
    for op in ops {
        match op {
            Op::AckReceipts { addr, ids, .. } => {
                for &id in ids {
                    receipt_acking.insert(addr);
                    r_users.push(addr.user.as_str());
                    r_devices.push(dev(addr));
                    r_ids.push(ms(id));
                }
            }
            Op::Receipts { list, .. } => {
                owners.extend(list.iter().map(|u| &u.owner));
                forwarded += list.len();
            }
            _ => {}
        }
    }
    let owners: Vec<&Addr> = owners.into_iter().collect();
    let mut keys = sorted_keys(owners.iter().map(|a| lock_key("receipts", a)));
    keys.extend(sorted_keys(
        receipt_acking.iter().map(|a| lock_key("receipt-acks", a)),
    ));
    let o_users: Vec<&str> = owners.iter().map(|a| a.user.as_str()).collect();
    let o_devices: Vec<i64> = owners.iter().map(|a| dev(a)).collect();
    let shared_messages = stored.iter().filter(|s| s.to.len() > 1).count() as i64;
    let entries: i64 = stored.iter().map(|s| s.to.len() as i64).sum();
    let receipt_bound = (acked.len() + forwarded) as i64;
    let [lock, ack_receipts_st, queues_st, ids_st] = prepare(
        tx,
        [
            (LOCK, !keys.is_empty()),
            (ACK_RECEIPTS, !r_ids.is_empty()),
            (QUEUES, !owners.is_empty()),
            (IDS, entries > 0 || receipt_bound > 0),
        ],
    )
    .await?;
    let (_, gone_receipts, queue_rows, id_rows) = futures_util::try_join!(
        run!(tx, lock, &keys),
        run!(tx, ack_receipts_st, &r_users, &r_devices, &r_ids),
        run!(tx, queues_st, &o_users, &o_devices),
        run!(tx, ids_st, &shared_messages, &entries, &receipt_bound),
    )?;
    let mut queues: HashMap<&Addr, Queue> = HashMap::with_capacity(owners.len());
    for r in queue_rows {
        queues.insert(
            nth(&owners, r.try_get(0).map_err(db)?)?,
            Queue {
                count: unsigned(&r, 1)?,
                last_id: unsigned(&r, 2)?,
            },
        );
    }
    let mut queue_delta: HashMap<&Addr, Delta> = HashMap::new();
    let by_owner: HashMap<(&str, u32), &Addr> = receipt_acking
        .iter()
        .map(|a| ((a.user.as_str(), a.device), *a))
        .collect();
    for r in &gone_receipts {
        let user: &str = r.try_get(0).map_err(db)?;
        let device = unsigned(r, 1)? as u32;
        if let Some(&a) = by_owner.get(&(user, device)) {
            // Written in round 3 as a difference; a queue this batch also adds to was read
            // before that, so its decisions see it fuller than it is, never emptier.
            queue_delta.entry(a).or_default().count -= 1;
        }
    }
    let (mut message_ids, mut envelope_ids, mut receipt_ids) = (vec![], vec![], vec![]);
    if let Some(r) = id_rows.first() {
        message_ids = r.try_get::<_, Vec<i64>>(0).map_err(db)?;
        envelope_ids = r.try_get::<_, Vec<i64>>(1).map_err(db)?;
        receipt_ids = r.try_get::<_, Vec<i64>>(2).map_err(db)?;
        message_ids.sort_unstable();
        envelope_ids.sort_unstable();
        receipt_ids.sort_unstable();
    }
    if message_ids.len() as i64 != shared_messages
        || envelope_ids.len() as i64 != entries
        || receipt_ids.len() as i64 != receipt_bound
    {
        return Err(db(std::io::Error::other("the sequences gave too few ids")));
    }

    // Acknowledgements decided: "delivered" receipts within each queue's cap.
    let mut receipts: Vec<(&Addr, StoredReceipt)> = Vec::new();
    let mut receipts_after: Vec<u64> = Vec::new();
    let mut unreferenced: HashMap<i64, (i64, i64)> = HashMap::new();
    let mut next_receipt = receipt_ids.into_iter();
    // Queues one receipt for `owner`, within its queue's cap; `false` if `owner` has no
    // queue here (not registered in this database).
    let mut place = |owner: &Addr, recipient: &Addr, message_id: &[u8], at_ms: u64, max: u64| {
        let Some((&owner, q)) = queues.get_key_value(owner) else {
            return false;
        };
        let mut q = *q;
        if q.count < max {
            let id = next_receipt.next().unwrap_or_default() as u64;
            q.count += 1;
            let after = q.last_id;
            q.last_id = id;
            queues.insert(owner, q);
            let d = queue_delta.entry(owner).or_default();
            d.count += 1;
            d.last_id = id as i64;
            receipts.push((
                owner,
                StoredReceipt {
                    receipt_id: id,
                    read: false,
                    recipient: recipient.clone(),
                    message_id: message_id.to_vec(),
                    at_ms,
                },
            ));
            receipts_after.push(after);
        }
        true
    };
    let mut acked_rows = acked.iter().peekable();
    for (i, op) in ops.iter().enumerate() {
        match op {
            Op::Ack {
                addr,
                now_ms,
                limits,
                ..
            } => {
                let mut senders = BTreeSet::new();
                let mut unplaced = Vec::new();
                while let Some(a) = acked_rows.next_if(|a| a.op == i) {
                    if let Some(m) = a.message {
                        unreferenced.entry(m).or_insert((a.refs, 0)).1 += 1;
                    }
                    senders.insert(a.sender.clone());
                    if !place(&a.sender, addr, &a.message_id, *now_ms, limits.max_queued) {
                        unplaced.push(Unplaced {
                            owner: a.sender.clone(),
                            recipient: addr.clone(),
                            message_id: a.message_id.clone(),
                            at_ms: *now_ms,
                        });
                    }
                }
                answers[i] = Some(Answer::Ack(senders.into_iter().collect(), unplaced));
            }
            Op::Receipts { list, limits, .. } => {
                for u in list {
                    place(
                        &u.owner,
                        &u.recipient,
                        &u.message_id,
                        u.at_ms,
                        limits.max_queued,
                    );
                }
                answers[i] = Some(Answer::Done);
            }
            Op::AckReceipts { .. } | Op::Touch { .. } => answers[i] = Some(Answer::Done),
            Op::Enqueue { .. } => {}
        }
    }

    // Round 3: the writes, then COMMIT.
    let mut deliveries = Vec::with_capacity(entries as usize + receipts.len());
    let mut m = MessageRows::default();
    let mut mb = MailboxRows::default();
    let (mut next_message, mut next_envelope) = (message_ids.into_iter(), envelope_ids.into_iter());
    for s in &stored {
        let size = s.out.ciphertext.len() as i64;
        let shared = if s.to.len() > 1 {
            let id = next_message.next().unwrap_or_default();
            m.push(id, s, s.to.len() as i64);
            Some(id)
        } else {
            None
        };
        let pushed = Arc::new(PushedMessage {
            sender: s.sender.clone(),
            message_id: s.out.message_id.clone(),
            server_ms: s.now_ms,
            ciphertext: s.out.ciphertext.clone(),
            franking_commitment: s.out.franking_commitment,
        });
        for &to in &s.to {
            let id = next_envelope.next().unwrap_or_default();
            mb.push(id, to, shared, size, s);
            let u = usage.entry(to).or_default();
            let after = u.last_id;
            u.last_id = id as u64;
            usage_delta.entry(to).or_default().last_id = id;
            deliveries.push(Delivery::Envelope {
                to: to.clone(),
                envelope_id: id as u64,
                message: pushed.clone(),
                after,
            });
        }
    }
    let (mut gone, mut fewer): (Vec<i64>, Vec<(i64, i64)>) = (vec![], vec![]);
    for (&id, &(refs, dropped)) in &unreferenced {
        // A shared message whose every reference this batch dropped is nobody else's.
        if dropped >= refs {
            gone.push(id);
        } else {
            fewer.push((id, dropped));
        }
    }
    fewer.sort_unstable();
    let fewer_ids: Vec<i64> = fewer.iter().map(|f| f.0).collect();
    let fewer_n: Vec<i64> = fewer.iter().map(|f| f.1).collect();
    let rc = Receipts::of(&receipts);
    let ud = DeltaRows::of(usage_delta.iter().map(|(a, d)| ((*a, ""), *d)));
    let sd = DeltaRows::of(share_delta.iter().map(|(k, d)| (*k, *d)));
    let qd = DeltaRows::of(queue_delta.iter().map(|(a, d)| ((*a, ""), *d)));
    let mut seen_users: Vec<(&str, i64)> = Vec::new();
    for op in ops {
        if let Op::Touch { user, now_ms, .. } = op {
            seen_users.push((user.as_str(), ms(*now_ms)));
        }
    }
    seen_users.sort_unstable();
    seen_users.dedup_by(|b, a| {
        a.0 == b.0 && {
            a.1 = a.1.max(b.1);
            true
        }
    });
    let pu: Vec<&str> = seen_users.iter().map(|p| p.0).collect();
    let pt: Vec<i64> = seen_users.iter().map(|p| p.1).collect();
    let [
        ins_m,
        ins_mb,
        lock_m,
        unref,
        unrefd,
        del_m,
        ins_r,
        ud_st,
        sd_st,
        empty_st,
        qd_st,
        pres,
    ] = prepare(
        tx,
        [
            (INSERT_MESSAGES, !m.id.is_empty()),
            (INSERT_MAILBOX, !mb.envelope_id.is_empty()),
            (LOCK_MESSAGES, !fewer.is_empty()),
            (UNREFERENCE, !fewer.is_empty()),
            (UNREFERENCED, !fewer.is_empty()),
            (DELETE_MESSAGES, !gone.is_empty()),
            (INSERT_RECEIPTS, !rc.id.is_empty()),
            (USAGE_DELTAS, !ud.users.is_empty()),
            (SHARE_DELTAS, !sd.users.is_empty()),
            (EMPTY_SHARES, !sd.users.is_empty()),
            (QUEUE_DELTAS, !qd.users.is_empty()),
            (PRESENCE, !pu.is_empty()),
        ],
    )
    .await?;
    futures_util::try_join!(
        run!(
            tx,
            ins_m,
            &m.id,
            &m.sender_user,
            &m.sender_device,
            &m.message_id,
            &m.server_ms,
            &m.expires_ms,
            &m.ciphertext,
            &m.refs,
            &m.franking
        ),
        run!(
            tx,
            ins_mb,
            &mb.envelope_id,
            &mb.user_id,
            &mb.device_id,
            &mb.message,
            &mb.size,
            &mb.expires_ms,
            &mb.sender_user,
            &mb.sender_device,
            &mb.message_id,
            &mb.server_ms,
            &mb.ciphertext,
            &mb.franking
        ),
        run!(tx, lock_m, &fewer_ids),
        run!(tx, unref, &fewer_ids, &fewer_n),
        run!(tx, unrefd, &fewer_ids),
        run!(tx, del_m, &gone),
        run!(
            tx,
            ins_r,
            &rc.id,
            &rc.owner_user,
            &rc.owner_device,
            &rc.recipient_user,
            &rc.recipient_device,
            &rc.message_id,
            &rc.at
        ),
        run!(
            tx,
            ud_st,
            &ud.users,
            &ud.devices,
            &ud.count,
            &ud.bytes,
            &ud.last_id
        ),
        run!(
            tx,
            sd_st,
            &sd.users,
            &sd.devices,
            &sd.senders,
            &sd.count,
            &sd.bytes
        ),
        run!(tx, empty_st, &sd.users, &sd.devices, &sd.senders),
        run!(tx, qd_st, &qd.users, &qd.devices, &qd.count, &qd.last_id),
        run!(tx, pres, &pu, &pt),
        control(tx, "COMMIT"),
    )?;
    for ((to, receipt), after) in receipts.into_iter().zip(receipts_after) {
        deliveries.push(Delivery::Receipt {
            to: to.clone(),
            receipt,
            after,
        });
    }
    let answers = answers
        .into_iter()
        .map(|a| a.unwrap_or(Answer::Done))
        .collect();
    Ok((answers, deliveries))
}

/// `keys`, deduplicated, in ascending order (the order every transaction takes them in).
fn sorted_keys(keys: impl Iterator<Item = i64>) -> Vec<i64> {
    let mut keys: Vec<i64> = keys.collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// New receipts, as arrays.
struct Receipts<'a> {
    id: Vec<i64>,
    owner_user: Vec<&'a str>,
    owner_device: Vec<i64>,
    recipient_user: Vec<&'a str>,
    recipient_device: Vec<i64>,
    message_id: Vec<&'a [u8]>,
    at: Vec<i64>,
}

impl<'a> Receipts<'a> {
    fn of(list: &'a [(&'a Addr, StoredReceipt)]) -> Self {
        Self {
            id: list.iter().map(|(_, r)| ms(r.receipt_id)).collect(),
            owner_user: list.iter().map(|(o, _)| o.user.as_str()).collect(),
            owner_device: list.iter().map(|(o, _)| dev(o)).collect(),
            recipient_user: list
                .iter()
                .map(|(_, r)| r.recipient.user.as_str())
                .collect(),
            recipient_device: list.iter().map(|(_, r)| dev(&r.recipient)).collect(),
            message_id: list.iter().map(|(_, r)| r.message_id.as_slice()).collect(),
            at: list.iter().map(|(_, r)| ms(r.at_ms)).collect(),
        }
    }
}

/// Count changes, as arrays (`senders` only for shares).
struct DeltaRows<'a> {
    users: Vec<&'a str>,
    devices: Vec<i64>,
    senders: Vec<&'a str>,
    count: Vec<i64>,
    bytes: Vec<i64>,
    last_id: Vec<i64>,
}

impl<'a> DeltaRows<'a> {
    fn of(changes: impl Iterator<Item = ((&'a Addr, &'a str), Delta)>) -> Self {
        let mut list: Vec<((&Addr, &str), Delta)> = changes.collect();
        // Rows written in key order: concurrent upserts of one row wait, never deadlock.
        list.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Self {
            users: list.iter().map(|((a, _), _)| a.user.as_str()).collect(),
            devices: list.iter().map(|((a, _), _)| dev(a)).collect(),
            senders: list.iter().map(|((_, s), _)| *s).collect(),
            count: list.iter().map(|(_, d)| d.count).collect(),
            bytes: list.iter().map(|(_, d)| d.bytes).collect(),
            last_id: list.iter().map(|(_, d)| d.last_id).collect(),
        }
    }
}

/// Checks `out`'s recipients as [`Store::enqueue`](crate::store::Store::enqueue) does and
/// counts it in the mailboxes with room: the refusals and the recipients it is for.
fn decide<'a>(
    usage: &mut HashMap<&'a Addr, Usage>,
    shares: &mut HashMap<(&'a Addr, &'a str), Share>,
    sender: &'a Addr,
    out: &'a Outgoing,
    limits: MailboxLimits,
) -> Result<(Refusals, Vec<&'a Addr>), StoreError> {
    let size = out.ciphertext.len() as u64;
    let mut refused = Vec::new();
    let mut to = Vec::with_capacity(out.recipients.len());
    for r in &out.recipients {
        let u = usage.get(r).copied().unwrap_or_default();
        if !u.registered {
            return Err(StoreError::UnknownRecipient(r.clone()));
        }
        if u.count >= limits.max_count || u.bytes + size > limits.max_bytes {
            refused.push(StoreError::MailboxFull(r.clone()));
            continue;
        }
        let s = shares
            .get(&(r, sender.user.as_str()))
            .copied()
            .unwrap_or_default();
        if s.count >= limits.sender_max_count || s.bytes + size > limits.sender_max_bytes {
            refused.push(StoreError::SenderShareFull(r.clone()));
            continue;
        }
        to.push(r);
    }
    if !refused.is_empty() && to.is_empty() {
        return Err(refused.swap_remove(0));
    }
    for &r in &to {
        let u = usage.entry(r).or_default();
        u.count += 1;
        u.bytes += size;
        let s = shares.entry((r, sender.user.as_str())).or_default();
        s.count += 1;
        s.bytes += size;
    }
    Ok((refused, to))
}

/// Rows of `messages`, as arrays.
#[derive(Default)]
struct MessageRows<'a> {
    id: Vec<i64>,
    sender_user: Vec<&'a str>,
    sender_device: Vec<i64>,
    message_id: Vec<&'a [u8]>,
    server_ms: Vec<i64>,
    expires_ms: Vec<i64>,
    ciphertext: Vec<&'a [u8]>,
    refs: Vec<i64>,
    franking: Vec<Option<&'a [u8]>>,
}

impl<'a> MessageRows<'a> {
    fn push(&mut self, id: i64, s: &'a Stored<'_>, refs: i64) {
        self.id.push(id);
        self.sender_user.push(&s.sender.user);
        self.sender_device.push(dev(s.sender));
        self.message_id.push(&s.out.message_id);
        self.server_ms.push(ms(s.now_ms));
        self.expires_ms.push(ms(s.expires_ms));
        self.ciphertext.push(&s.out.ciphertext);
        self.refs.push(refs);
        self.franking
            .push(s.out.franking_commitment.as_ref().map(|c| &c[..]));
    }
}

/// Rows of `mailbox`, as arrays: a message for one recipient lives in its row; one for
/// several is a `messages` row they refer to.
#[derive(Default)]
struct MailboxRows<'a> {
    envelope_id: Vec<i64>,
    user_id: Vec<&'a str>,
    device_id: Vec<i64>,
    message: Vec<Option<i64>>,
    size: Vec<i64>,
    expires_ms: Vec<i64>,
    sender_user: Vec<Option<&'a str>>,
    sender_device: Vec<Option<i64>>,
    message_id: Vec<Option<&'a [u8]>>,
    server_ms: Vec<Option<i64>>,
    ciphertext: Vec<Option<&'a [u8]>>,
    franking: Vec<Option<&'a [u8]>>,
}

impl<'a> MailboxRows<'a> {
    fn push(&mut self, id: i64, to: &'a Addr, shared: Option<i64>, size: i64, s: &'a Stored<'_>) {
        self.envelope_id.push(id);
        self.user_id.push(&to.user);
        self.device_id.push(dev(to));
        self.message.push(shared);
        self.size.push(size);
        self.expires_ms.push(ms(s.expires_ms));
        let inline = shared.is_none();
        self.sender_user
            .push(inline.then_some(s.sender.user.as_str()));
        self.sender_device.push(inline.then(|| dev(s.sender)));
        self.message_id
            .push(inline.then_some(s.out.message_id.as_slice()));
        self.server_ms.push(inline.then(|| ms(s.now_ms)));
        self.ciphertext
            .push(inline.then_some(s.out.ciphertext.as_slice()));
        self.franking.push(if inline {
            s.out.franking_commitment.as_ref().map(|c| &c[..])
        } else {
            None
        });
    }
}
