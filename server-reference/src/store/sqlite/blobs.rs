//! Attachment blob records and one-time blob upload tokens.

use rusqlite::{Connection, OptionalExtension, params};

use crate::store::{Addr, StoreError};

/// [`Store::put_blob`](crate::store::Store::put_blob), on the database thread.
pub(super) fn put_blob(
    c: &Connection,
    id: String,
    size: u64,
    expires_ms: u64,
) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO blobs (id, size, expires_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (id) DO UPDATE SET expires_ms = MAX(expires_ms, ?3)",
        params![id, size as i64, expires_ms as i64],
    )?;
    Ok(())
}

/// [`Store::put_upload_token`](crate::store::Store::put_upload_token), on the database thread.
pub(super) fn put_upload_token(
    c: &Connection,
    token_hash: [u8; 32],
    user: String,
    device: u32,
    expires_ms: u64,
) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO upload_tokens (token_hash, user_id, device_id, expires_ms) VALUES (?1, ?2, ?3, ?4)",
        params![token_hash.to_vec(), user, device, expires_ms as i64],
    )?;
    Ok(())
}

/// [`Store::take_upload_token`](crate::store::Store::take_upload_token), on the database thread.
pub(super) fn take_upload_token(
    c: &Connection,
    token_hash: [u8; 32],
    now_ms: u64,
) -> Result<Option<Addr>, StoreError> {
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
}

/// [`Store::blob`](crate::store::Store::blob), on the database thread.
pub(super) fn blob(c: &Connection, id: String, now_ms: u64) -> Result<Option<u64>, StoreError> {
    Ok(c.query_row(
        "SELECT size FROM blobs WHERE id = ?1 AND expires_ms > ?2",
        params![id, now_ms as i64],
        |r| r.get::<_, i64>(0),
    )
    .optional()?
    .map(|n| n as u64))
}

/// [`Store::expire_blobs`](crate::store::Store::expire_blobs), on the database thread.
pub(super) fn expire_blobs(c: &Connection, now_ms: u64) -> Result<Vec<String>, StoreError> {
    let mut stmt = c.prepare("SELECT id FROM blobs WHERE expires_ms <= ?1")?;
    let ids = stmt
        .query_map(params![now_ms as i64], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    c.execute(
        "DELETE FROM blobs WHERE expires_ms <= ?1",
        params![now_ms as i64],
    )?;
    Ok(ids)
}

/// [`Store::blob_usage`](crate::store::Store::blob_usage), on the database thread.
pub(super) fn usage(c: &Connection, a: &Addr, day: u64) -> Result<u64, StoreError> {
    Ok(c.prepare_cached(
        "SELECT bytes FROM blob_usage WHERE user_id = ?1 AND device_id = ?2 AND day = ?3",
    )?
    .query_row(params![a.user, a.device, day as i64], |r| {
        r.get::<_, i64>(0)
    })
    .optional()?
    .unwrap_or(0) as u64)
}

/// [`Store::add_blob_usage`](crate::store::Store::add_blob_usage), on the database thread.
pub(super) fn add_usage(
    c: &Connection,
    a: &Addr,
    day: u64,
    bytes: u64,
    quota: u64,
) -> Result<bool, StoreError> {
    if usage(c, a, day)?.saturating_add(bytes) > quota {
        return Ok(false);
    }
    c.prepare_cached(
        "INSERT INTO blob_usage (user_id, device_id, day, bytes) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (user_id, device_id, day) DO UPDATE SET bytes = bytes + ?4",
    )?
    .execute(params![a.user, a.device, day as i64, bytes as i64])?;
    Ok(true)
}
