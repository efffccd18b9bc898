//! The directory: devices and their identity keys, registration, rekeying, and prekeys.

use rusqlite::{Connection, OptionalExtension, params};

use crate::store::{
    Addr, DeviceLookup, PrekeyCaps, PrekeyStock, PrekeyUpload, StoreError, StoredBundle,
    StoredKemPrekey, StoredPrekey,
};

/// Every table that holds a device's prekeys.
const PREKEY_TABLES: [&str; 4] = [
    "signed_prekeys",
    "one_time_prekeys",
    "kem_prekeys",
    "last_resort_kem_prekeys",
];

fn drop_prekeys(c: &Connection, user: &str, device: u32) -> Result<(), StoreError> {
    for table in PREKEY_TABLES {
        c.execute(
            &format!("DELETE FROM {table} WHERE user_id = ?1 AND device_id = ?2"),
            params![user, device],
        )?;
    }
    Ok(())
}

/// [`Store::device`](crate::store::Store::device), on the database thread.
pub(super) fn device(
    c: &Connection,
    user: String,
    device: u32,
) -> Result<DeviceLookup, StoreError> {
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
    let mut stmt = c.prepare("SELECT device_id, identity_key FROM devices WHERE user_id = ?1")?;
    let rows = stmt
        .query_map(params![user], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(DeviceLookup::Unknown(rows))
}

/// [`Store::register`](crate::store::Store::register), on the database thread.
pub(super) fn register(
    c: &Connection,
    user: String,
    device: u32,
    key: Vec<u8>,
    now_ms: u64,
    max_devices: usize,
) -> Result<bool, StoreError> {
    let exists = c
        .prepare_cached("SELECT 1 FROM devices WHERE user_id = ?1 AND device_id = ?2")?
        .query_row(params![user, device], |_| Ok(()))
        .optional()?
        .is_some();
    if exists {
        return Ok(false);
    }
    if revoked(c, &user, &key)? {
        return Err(StoreError::Revoked);
    }
    let count: i64 = c
        .prepare_cached("SELECT COUNT(*) FROM devices WHERE user_id = ?1")?
        .query_row(params![user], |r| r.get(0))?;
    if count as u64 >= max_devices as u64 {
        return Err(StoreError::TooManyDevices);
    }
    c.prepare_cached(
        "INSERT INTO devices (user_id, device_id, identity_key, registered_ms) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![user, device, key, now_ms as i64])?;
    Ok(true)
}

/// Whether `user` removed a device with identity key `key`.
fn revoked(c: &Connection, user: &str, key: &[u8]) -> Result<bool, StoreError> {
    Ok(
        c.prepare_cached("SELECT 1 FROM revoked_keys WHERE user_id = ?1 AND identity_key = ?2")?
            .query_row(params![user, key], |_| Ok(()))
            .optional()?
            .is_some(),
    )
}

/// [`Store::remove_device`](crate::store::Store::remove_device), on the database thread.
pub(super) fn remove_device(c: &Connection, a: &Addr, now_ms: u64) -> Result<bool, StoreError> {
    let key: Option<Vec<u8>> = c
        .query_row(
            "SELECT identity_key FROM devices WHERE user_id = ?1 AND device_id = ?2",
            params![a.user, a.device],
            |r| r.get(0),
        )
        .optional()?;
    let Some(key) = key else {
        return Ok(false);
    };
    c.execute(
        "INSERT OR REPLACE INTO revoked_keys (user_id, identity_key, removed_ms) VALUES (?1, ?2, ?3)",
        params![a.user, key, now_ms as i64],
    )?;
    // Shared messages lose this device's reference; those nobody else awaits go.
    c.execute(
        "UPDATE messages SET refs = refs - (SELECT COUNT(*) FROM mailbox mb
            WHERE mb.message = messages.id AND mb.user_id = ?1 AND mb.device_id = ?2)
         WHERE id IN (SELECT message FROM mailbox WHERE user_id = ?1 AND device_id = ?2
            AND message IS NOT NULL)",
        params![a.user, a.device],
    )?;
    c.execute(
        "DELETE FROM messages WHERE refs <= 0 AND id IN (SELECT message FROM mailbox
            WHERE user_id = ?1 AND device_id = ?2 AND message IS NOT NULL)",
        params![a.user, a.device],
    )?;
    for sql in [
        "DELETE FROM mailbox WHERE user_id = ?1 AND device_id = ?2",
        "DELETE FROM receipts WHERE user_id = ?1 AND device_id = ?2",
        "DELETE FROM upload_tokens WHERE user_id = ?1 AND device_id = ?2",
        "DELETE FROM devices WHERE user_id = ?1 AND device_id = ?2",
    ] {
        c.execute(sql, params![a.user, a.device])?;
    }
    drop_prekeys(c, &a.user, a.device)?;
    Ok(true)
}

/// [`Store::devices`](crate::store::Store::devices), on the database thread.
pub(super) fn devices(c: &Connection, user: String) -> Result<Vec<(u32, Vec<u8>)>, StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT device_id, identity_key FROM devices WHERE user_id = ?1 ORDER BY device_id",
    )?;
    let rows = stmt
        .query_map(params![user], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// [`Store::rekey`](crate::store::Store::rekey), on the database thread.
pub(super) fn rekey(
    c: &Connection,
    user: String,
    device: u32,
    old: Vec<u8>,
    new: Vec<u8>,
) -> Result<bool, StoreError> {
    if revoked(c, &user, &new)? {
        return Err(StoreError::Revoked);
    }
    let n = c.execute(
        "UPDATE devices SET identity_key = ?4 WHERE user_id = ?1 AND device_id = ?2 AND identity_key = ?3",
        params![user, device, old, new],
    )?;
    if n == 1 {
        drop_prekeys(c, &user, device)?;
    }
    Ok(n == 1)
}

/// [`Store::upload_prekeys`](crate::store::Store::upload_prekeys), on the database thread
/// (inside the operation's savepoint: an error leaves nothing behind).
pub(super) fn upload_prekeys(
    c: &Connection,
    user: String,
    device: u32,
    upload: PrekeyUpload,
    caps: PrekeyCaps,
) -> Result<PrekeyStock, StoreError> {
    let stock = prekey_count(c, user.clone(), device)?;
    let over = |have: u64, adding: usize, cap: u64| adding > 0 && have + adding as u64 > cap;
    if over(stock.one_time, upload.one_time.len(), caps.one_time)
        || over(
            stock.kem_one_time,
            upload.kem_one_time.len(),
            caps.kem_one_time,
        )
    {
        return Err(StoreError::PrekeyStockFull);
    }
    if upload.post_quantum && !stock.kem_last_resort && upload.kem_last_resort.is_none() {
        return Err(StoreError::NoLastResort);
    }
    if let Some((spk, sig)) = upload.signed {
        c.execute(
            "INSERT OR REPLACE INTO signed_prekeys (user_id, device_id, id, key, signature, post_quantum) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![user, device, spk.id, spk.key, sig, upload.post_quantum],
        )?;
    }
    let mut stmt = c.prepare_cached("INSERT OR REPLACE INTO one_time_prekeys (user_id, device_id, id, key) VALUES (?1, ?2, ?3, ?4)")?;
    for k in upload.one_time {
        stmt.execute(params![user, device, k.id, k.key])?;
    }
    let mut stmt = c.prepare_cached("INSERT OR REPLACE INTO kem_prekeys (user_id, device_id, id, key, signature) VALUES (?1, ?2, ?3, ?4, ?5)")?;
    for k in upload.kem_one_time {
        stmt.execute(params![user, device, k.id, k.key, k.signature])?;
    }
    if let Some(k) = upload.kem_last_resort {
        c.execute(
            "INSERT OR REPLACE INTO last_resort_kem_prekeys (user_id, device_id, id, key, signature) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![user, device, k.id, k.key, k.signature],
        )?;
    }
    prekey_count(c, user, device)
}

/// [`Store::take_bundle`](crate::store::Store::take_bundle), on the database thread.
pub(super) fn take_bundle(
    c: &Connection,
    user: String,
    device: u32,
    one_time: bool,
) -> Result<Option<StoredBundle>, StoreError> {
    let Some(identity_key) = c
        .query_row(
            "SELECT identity_key FROM devices WHERE user_id = ?1 AND device_id = ?2",
            params![user, device],
            |r| r.get::<_, Vec<u8>>(0),
        )
        .optional()?
    else {
        return Ok(None);
    };
    let Some((id, key, signature, post_quantum)) = c
        .query_row(
            "SELECT id, key, signature, post_quantum FROM signed_prekeys WHERE user_id = ?1 AND device_id = ?2",
            params![user, device],
            |r| {
                Ok((
                    r.get::<_, u32>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                    r.get::<_, bool>(3)?,
                ))
            },
        )
        .optional()?
    else {
        return Ok(None);
    };
    // One writer thread and a savepoint per operation: the selects and deletes below
    // cannot interleave with another fetch, so each one-time key goes out once.
    let opk = if one_time {
        c.prepare_cached(
            "DELETE FROM one_time_prekeys WHERE rowid = (SELECT rowid FROM one_time_prekeys
                WHERE user_id = ?1 AND device_id = ?2 ORDER BY id LIMIT 1) RETURNING id, key",
        )?
        .query_row(params![user, device], |r| {
            Ok(StoredPrekey {
                id: r.get(0)?,
                key: r.get(1)?,
            })
        })
        .optional()?
    } else {
        None
    };
    let kem_row = |r: &rusqlite::Row<'_>| {
        Ok(StoredKemPrekey {
            id: r.get(0)?,
            key: r.get(1)?,
            signature: r.get(2)?,
        })
    };
    // KEM prekeys go only with a post-quantum signed prekey, which promises one.
    let kem_one_time = if one_time && post_quantum {
        c.prepare_cached(
            "DELETE FROM kem_prekeys WHERE (user_id, device_id, id) = (SELECT user_id, device_id, id
                FROM kem_prekeys WHERE user_id = ?1 AND device_id = ?2 ORDER BY id LIMIT 1)
             RETURNING id, key, signature",
        )?
        .query_row(params![user, device], kem_row)
        .optional()?
    } else {
        None
    };
    let kem_prekey = match kem_one_time {
        Some(k) => Some((k, true)),
        None if !post_quantum => None,
        None => c
            .prepare_cached(
                "SELECT id, key, signature FROM last_resort_kem_prekeys
                 WHERE user_id = ?1 AND device_id = ?2",
            )?
            .query_row(params![user, device], kem_row)
            .optional()?
            .map(|k| (k, false)),
    };
    Ok(Some(StoredBundle {
        identity_key,
        signed_prekey: StoredPrekey { id, key },
        signature,
        one_time_prekey: opk,
        kem_prekey,
    }))
}

/// [`Store::prekey_count`](crate::store::Store::prekey_count), on the database thread.
pub(super) fn prekey_count(
    c: &Connection,
    user: String,
    device: u32,
) -> Result<PrekeyStock, StoreError> {
    let (one_time, kem_one_time, kem_last_resort) = c
        .prepare_cached(
            "SELECT (SELECT COUNT(*) FROM one_time_prekeys WHERE user_id = ?1 AND device_id = ?2),
                    (SELECT COUNT(*) FROM kem_prekeys WHERE user_id = ?1 AND device_id = ?2),
                    EXISTS (SELECT 1 FROM last_resort_kem_prekeys WHERE user_id = ?1 AND device_id = ?2)",
        )?
        .query_row(params![user, device], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, bool>(2)?))
        })?;
    Ok(PrekeyStock {
        one_time: one_time as u64,
        kem_one_time: kem_one_time as u64,
        kem_last_resort,
    })
}
