//! Mailboxes and receipts: storing an envelope for its recipients, reading, acknowledging
//! (which queues "delivered" receipts), "read" receipts, and expiry.

use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, params};

use super::Db;
use crate::store::{
    Addr, Delivery, MailboxLimits, Outgoing, PushedMessage, StoreError, StoredEnvelope,
    StoredReceipt,
};

/// Checks every recipient of `out` (registered, mailbox under its caps), then stores the
/// message once and an entry in each mailbox. Nothing is written if a check fails.
pub(super) fn store_envelope(
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

/// What [`enqueue_many`] gives back: one result per envelope, and the deliveries of those
/// stored.
type Batch = (Vec<Result<(), StoreError>>, Vec<Delivery>);

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
            Ok(d) => {
                deliveries.extend(d);
                results.push(Ok(()));
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
                        COALESCE(mb.message_id, m.message_id), COALESCE(mb.server_ms, m.server_ms), COALESCE(mb.ciphertext, m.ciphertext)
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
                })
            },
        )?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// [`Store::ack`](crate::store::Store::ack), on the database thread.
pub(super) fn ack(
    db: &mut Db,
    user: String,
    device: u32,
    me: Addr,
    envelope_ids: Vec<u64>,
    now_ms: u64,
) -> Result<(Vec<Addr>, Vec<Delivery>), StoreError> {
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
                    Addr {
                        user: r.get(3)?,
                        device: r.get(4)?,
                    },
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
        receipt.execute(params![
            receipt_id as i64,
            sender.user,
            sender.device,
            user,
            device,
            mid,
            now_ms as i64
        ])?;
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
}

/// [`Store::read`](crate::store::Store::read), on the database thread.
pub(super) fn read(
    db: &mut Db,
    ru: String,
    rd: u32,
    reader: Addr,
    sender: Addr,
    message_ids: Vec<Vec<u8>>,
    now_ms: u64,
) -> Result<((), Vec<Delivery>), StoreError> {
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
        insert.execute(params![
            receipt_id as i64,
            sender.user,
            sender.device,
            ru,
            rd,
            mid,
            now_ms as i64
        ])?;
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
    user: String,
    device: u32,
    receipt_ids: Vec<u64>,
) -> Result<(), StoreError> {
    for id in receipt_ids {
        c.execute(
            "DELETE FROM receipts WHERE receipt_id = ?1 AND user_id = ?2 AND device_id = ?3",
            params![id as i64, user, device],
        )?;
    }
    Ok(())
}

/// [`Store::expire`](crate::store::Store::expire), on the database thread.
pub(super) fn expire(db: &mut Db, now_ms: u64) -> Result<(u64, Vec<Delivery>), StoreError> {
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
}
