//! Mailboxes and receipts: storing an envelope for its recipients, reading, acknowledging
//! (which queues "delivered" receipts), and expiry.

use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, params};

use super::Db;
use super::ids::IdCounter;
use super::memo::Memos;
use crate::store::{
    Addr, Delivery, MailboxLimits, Outgoing, PushedMessage, ReceiptLimits, Refusals, StoreError,
    StoredEnvelope, StoredReceipt,
};

/// Checks every recipient of `out` (registered, mailbox under its caps), then stores the
/// message once and an entry in the mailbox of each recipient with room; the others are
/// returned. Nothing is written if a recipient is unknown or none has room.
pub(super) fn store_envelope(
    db: &mut Db,
    sender: &Addr,
    mut out: Outgoing,
    now_ms: u64,
    limits: MailboxLimits,
) -> Result<(Refusals, Vec<Delivery>), StoreError> {
    let size = out.ciphertext.len() as i64;
    let expires = now_ms.saturating_add(limits.ttl_ms) as i64;
    let mut refused = Vec::new();
    for r in &out.recipients {
        let full = db.memos.with(&db.conn, r, |rd, m| {
            if !m.registered(rd, r)? {
                return Err(StoreError::UnknownRecipient(r.clone()));
            }
            let (count, bytes) = m.usage(rd, r)?;
            if count >= limits.max_count || bytes + size as u64 > limits.max_bytes {
                return Ok(Some(StoreError::MailboxFull(r.clone())));
            }
            let (count, bytes) = m.share(rd, r, &sender.user)?;
            Ok(
                (count >= limits.sender_max_count || bytes + size as u64 > limits.sender_max_bytes)
                    .then(|| StoreError::SenderShareFull(r.clone())),
            )
        })?;
        refused.extend(full);
    }
    if !refused.is_empty() {
        if refused.len() == out.recipients.len() {
            return Err(refused.swap_remove(0));
        }
        out.recipients.retain(|r| {
            !refused.iter().any(|e| {
                matches!(e, StoreError::MailboxFull(a) | StoreError::SenderShareFull(a) if a == r)
            })
        });
    }
    let c = &db.conn;
    let mut ids = Vec::with_capacity(out.recipients.len());
    if let [r] = out.recipients.as_slice() {
        // One recipient: the message lives in its mailbox row.
        let id = db.envelope_ids.take(c)?;
        c.prepare_cached(
            "INSERT INTO mailbox (envelope_id, user_id, device_id, sender_user, sender_device, message_id, server_ms, ciphertext, size, expires_ms, franking)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )?
        .execute(params![id as i64, r.user, r.device, sender.user, sender.device, out.message_id, now_ms as i64, out.ciphertext, size, expires, out.franking_commitment])?;
        ids.push(id);
    } else {
        c.prepare_cached(
            "INSERT INTO messages (sender_user, sender_device, message_id, server_ms, expires_ms, ciphertext, refs, franking) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?
        .execute(params![sender.user, sender.device, out.message_id, now_ms as i64, expires, out.ciphertext, out.recipients.len() as i64, out.franking_commitment])?;
        let message = c.last_insert_rowid();
        let mut insert = c.prepare_cached("INSERT INTO mailbox (envelope_id, user_id, device_id, message, size, expires_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?;
        for r in &out.recipients {
            let id = db.envelope_ids.take(c)?;
            insert.execute(params![id as i64, r.user, r.device, message, size, expires])?;
            ids.push(id);
        }
    }
    for r in &out.recipients {
        db.memos.update(r, |m| m.add(&sender.user, size as u64));
    }
    let pushed = Arc::new(PushedMessage {
        sender: sender.clone(),
        message_id: out.message_id,
        server_ms: now_ms,
        ciphertext: out.ciphertext,
        franking_commitment: out.franking_commitment,
    });
    let deliveries = out
        .recipients
        .into_iter()
        .zip(ids)
        .map(|(to, envelope_id)| Delivery::Envelope {
            to,
            envelope_id,
            message: pushed.clone(),
            // One writer, pushing in commit order.
            after: 0,
        })
        .collect();
    Ok((refused, deliveries))
}

/// What [`enqueue_many`] gives back: one result per envelope, and the deliveries of those
/// stored.
type Batch = (Vec<Result<Refusals, StoreError>>, Vec<Delivery>);

/// [`Store::enqueue_many`](crate::store::Store::enqueue_many), on the database thread.
pub(super) fn enqueue_many(
    db: &mut Db,
    sender: Addr,
    batch: Vec<Outgoing>,
    now_ms: u64,
    limits: MailboxLimits,
) -> Result<Batch, StoreError> {
    let mut results = Vec::with_capacity(batch.len());
    let mut deliveries = Vec::with_capacity(batch.len());
    for out in batch {
        match store_envelope(db, &sender, out, now_ms, limits) {
            Ok((refused, d)) => {
                deliveries.extend(d);
                results.push(Ok(refused));
            }
            Err(e @ StoreError::Database(_)) => return Err(e),
            Err(e) => results.push(Err(e)),
        }
    }
    Ok((results, deliveries))
}

/// [`Store::pending`](crate::store::Store::pending), on the database thread.
pub(super) fn pending(
    c: &Connection,
    user: String,
    device: u32,
    after_id: u64,
    limit: u32,
    now_ms: u64,
) -> Result<Vec<StoredEnvelope>, StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT mb.envelope_id, COALESCE(mb.sender_user, m.sender_user), COALESCE(mb.sender_device, m.sender_device),
                        COALESCE(mb.message_id, m.message_id), COALESCE(mb.server_ms, m.server_ms), COALESCE(mb.ciphertext, m.ciphertext),
                        COALESCE(mb.franking, m.franking)
                 FROM mailbox mb LEFT JOIN messages m ON m.id = mb.message
                 WHERE mb.user_id = ?1 AND mb.device_id = ?2 AND mb.envelope_id > ?3 AND mb.expires_ms > ?4
                 ORDER BY mb.envelope_id LIMIT ?5",
    )?;
    let rows = stmt
        .query_map(
            params![user, device, after_id as i64, now_ms as i64, limit],
            |r| {
                Ok(StoredEnvelope {
                    envelope_id: r.get::<_, i64>(0)? as u64,
                    sender: Addr {
                        user: r.get(1)?,
                        device: r.get(2)?,
                    },
                    message_id: r.get(3)?,
                    server_ms: r.get::<_, i64>(4)? as u64,
                    ciphertext: r.get(5)?,
                    franking_commitment: franking_of(r.get(6)?),
                })
            },
        )?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// [`Store::ack`](crate::store::Store::ack), on the database thread.
pub(super) fn ack(
    db: &mut Db,
    me: Addr,
    envelope_ids: Vec<u64>,
    now_ms: u64,
    limits: ReceiptLimits,
) -> Result<(Vec<Addr>, Vec<Delivery>), StoreError> {
    let mut senders = vec![];
    let mut deliveries = vec![];
    let Db {
        conn: c,
        memos,
        receipt_ids,
        ..
    } = db;
    // Plain statements, not RETURNING: that costs a temporary table per statement.
    // (shared message and its reference count, if any; size; sender; message id)
    let mut find = c.prepare_cached(
        "SELECT mb.message, mb.size, m.refs, COALESCE(mb.sender_user, m.sender_user),
                COALESCE(mb.sender_device, m.sender_device), COALESCE(mb.message_id, m.message_id)
         FROM mailbox mb LEFT JOIN messages m ON m.id = mb.message
         WHERE mb.envelope_id = ?1 AND mb.user_id = ?2 AND mb.device_id = ?3",
    )?;
    let mut take = c.prepare_cached("DELETE FROM mailbox WHERE envelope_id = ?1")?;
    let mut unref = c.prepare_cached("UPDATE messages SET refs = refs - 1 WHERE id = ?1")?;
    let mut drop_message = c.prepare_cached("DELETE FROM messages WHERE id = ?1")?;
    let mut receipts = ReceiptWriter::new(c, receipt_ids, limits)?;
    for id in envelope_ids {
        let row = find
            .query_row(params![id as i64, me.user, me.device], |r| {
                Ok((
                    (r.get::<_, Option<i64>>(0)?, r.get::<_, Option<i64>>(2)?),
                    r.get::<_, i64>(1)?,
                    Addr {
                        user: r.get(3)?,
                        device: r.get(4)?,
                    },
                    r.get::<_, Vec<u8>>(5)?,
                ))
            })
            .optional()?;
        // Not ours, or already acknowledged: nothing to do.
        let Some(((message, refs), size, sender, mid)) = row else {
            continue;
        };
        take.execute(params![id as i64])?;
        memos.update(&me, |m| m.remove(&sender.user, size as u64));
        match (message, refs) {
            (Some(m), Some(refs)) if refs > 1 => unref.execute(params![m])?,
            (Some(m), _) => drop_message.execute(params![m])?,
            (None, _) => 0,
        };
        if let Some(d) = receipts.queue(memos, &sender, &me, mid, false, now_ms)? {
            deliveries.push(d);
        }
        senders.push(sender);
    }
    senders.sort();
    senders.dedup();
    Ok((senders, deliveries))
}

/// Queues receipts, each for its device if that device's queue has room (else drops it,
/// counted in the log).
struct ReceiptWriter<'a> {
    c: &'a Connection,
    insert: rusqlite::CachedStatement<'a>,
    ids: &'a mut IdCounter,
    limits: ReceiptLimits,
}

impl<'a> ReceiptWriter<'a> {
    fn new(
        c: &'a Connection,
        ids: &'a mut IdCounter,
        limits: ReceiptLimits,
    ) -> Result<Self, StoreError> {
        let insert = c.prepare_cached(
            "INSERT INTO receipts (receipt_id, user_id, device_id, read, recipient_user, recipient_device, message_id, at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        Ok(Self {
            c,
            insert,
            ids,
            limits,
        })
    }

    /// Queues a receipt for `to`, from `by`; returns its delivery, or `None` if dropped.
    fn queue(
        &mut self,
        memos: &mut Memos,
        to: &Addr,
        by: &Addr,
        message_id: Vec<u8>,
        read: bool,
        now_ms: u64,
    ) -> Result<Option<Delivery>, StoreError> {
        let max = self.limits.max_queued;
        if !memos.with(self.c, to, |rd, m| m.take_receipt_room(rd, to, max))? {
            tracing::debug!(user = %to.user, device = to.device, "receipt queue full; receipt dropped");
            return Ok(None);
        }
        let receipt_id = self.ids.take(self.c)?;
        self.insert.execute(params![
            receipt_id as i64,
            to.user,
            to.device,
            i64::from(read),
            by.user,
            by.device,
            message_id,
            now_ms as i64
        ])?;
        Ok(Some(Delivery::Receipt {
            to: to.clone(),
            receipt: StoredReceipt {
                receipt_id,
                read,
                recipient: by.clone(),
                message_id,
                at_ms: now_ms,
            },
            after: 0,
        }))
    }
}

/// [`Store::receipts`](crate::store::Store::receipts), on the database thread.
pub(super) fn receipts(
    c: &Connection,
    user: String,
    device: u32,
    after_id: u64,
    limit: u32,
) -> Result<Vec<StoredReceipt>, StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT receipt_id, read, recipient_user, recipient_device, message_id, at_ms FROM receipts
                 WHERE user_id = ?1 AND device_id = ?2 AND receipt_id > ?3 ORDER BY receipt_id LIMIT ?4",
    )?;
    let rows = stmt
        .query_map(params![user, device, after_id as i64, limit], |r| {
            Ok(StoredReceipt {
                receipt_id: r.get::<_, i64>(0)? as u64,
                read: r.get::<_, i64>(1)? != 0,
                recipient: Addr {
                    user: r.get(2)?,
                    device: r.get(3)?,
                },
                message_id: r.get(4)?,
                at_ms: r.get::<_, i64>(5)? as u64,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// [`Store::ack_receipts`](crate::store::Store::ack_receipts), on the database thread.
pub(super) fn ack_receipts(
    c: &Connection,
    a: &Addr,
    receipt_ids: Vec<u64>,
) -> Result<(), StoreError> {
    let mut delete = c.prepare_cached(
        "DELETE FROM receipts WHERE receipt_id = ?1 AND user_id = ?2 AND device_id = ?3",
    )?;
    for id in receipt_ids {
        delete.execute(params![id as i64, a.user, a.device])?;
    }
    Ok(())
}

/// [`Store::expire`](crate::store::Store::expire), on the database thread.
pub(super) fn expire(
    db: &mut Db,
    now_ms: u64,
    receipts: ReceiptLimits,
) -> Result<(u64, Vec<Delivery>), StoreError> {
    let c = &db.conn;
    let old_receipts = c.execute(
        "DELETE FROM receipts WHERE at_ms <= ?1",
        params![now_ms.saturating_sub(receipts.ttl_ms) as i64],
    )?;
    if old_receipts > 0 {
        db.memos.forget_all();
    }
    let c = &db.conn;
    c.execute(
        "DELETE FROM presence_grants WHERE until_ms <= ?1",
        params![now_ms as i64],
    )?;
    c.execute(
        "DELETE FROM blob_usage WHERE day < ?1",
        params![((now_ms / crate::store::DAY_MS).saturating_sub(1)) as i64],
    )?;
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
        db.memos.forget_all();
    }
    Ok((removed as u64, Vec::new()))
}

/// A stored franking commitment (32 bytes, or none).
pub(super) fn franking_of(b: Option<Vec<u8>>) -> Option<[u8; 32]> {
    b.and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
}
