//! Message franking (SPEC §17): the relay's franking key and the abuse reports it verified.

use rusqlite::{Connection, OptionalExtension, params};

use crate::store::{Addr, StoreError, StoredReport};

/// How far back a reporter's reports count against its daily cap.
const DAY_MS: u64 = 24 * 3600 * 1000;

/// [`Store::franking_key`](crate::store::Store::franking_key), on the database thread.
pub(super) fn franking_key(c: &Connection, fresh: [u8; 32]) -> Result<[u8; 32], StoreError> {
    c.prepare_cached("INSERT OR IGNORE INTO relay_keys (name, key) VALUES ('franking', ?1)")?
        .execute([&fresh[..]])?;
    let key: Vec<u8> = c
        .prepare_cached("SELECT key FROM relay_keys WHERE name = 'franking'")?
        .query_row([], |r| r.get(0))?;
    <[u8; 32]>::try_from(key.as_slice()).map_err(|_| {
        StoreError::database(std::io::Error::other("stored franking key is not 32 bytes"))
    })
}

/// [`Store::put_report`](crate::store::Store::put_report), on the database thread.
pub(super) fn put_report(
    c: &Connection,
    r: &StoredReport,
    max_per_day: u32,
) -> Result<bool, StoreError> {
    let known: Option<i64> = c
        .prepare_cached(
            "SELECT id FROM reports WHERE reporter_user = ?1 AND reporter_device = ?2 AND tag = ?3",
        )?
        .query_row(
            params![r.reporter.user, r.reporter.device, &r.tag[..]],
            |row| row.get(0),
        )
        .optional()?;
    if known.is_some() {
        return Ok(false);
    }
    let recent: i64 = c
        .prepare_cached(
            "SELECT COUNT(*) FROM reports WHERE reporter_user = ?1 AND received_ms > ?2",
        )?
        .query_row(
            params![r.reporter.user, r.received_ms.saturating_sub(DAY_MS) as i64],
            |row| row.get(0),
        )?;
    if recent >= i64::from(max_per_day) {
        return Err(StoreError::TooManyReports);
    }
    c.prepare_cached(
        "INSERT INTO reports (reporter_user, reporter_device, sender_user, sender_device, server_ms, content, reason, tag, received_ms, consent)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        r.reporter.user,
        r.reporter.device,
        r.sender.user,
        r.sender.device,
        r.server_ms as i64,
        r.content,
        r.reason,
        &r.tag[..],
        r.received_ms as i64,
        r.consent
    ])?;
    Ok(true)
}

/// [`Store::reports`](crate::store::Store::reports), on the database thread.
pub(super) fn reports(c: &Connection) -> Result<Vec<StoredReport>, StoreError> {
    let mut s = c.prepare(
        "SELECT id, reporter_user, reporter_device, sender_user, sender_device, server_ms, content, reason, tag, received_ms, consent
         FROM reports ORDER BY id",
    )?;
    let rows = s
        .query_map([], |r| {
            Ok(StoredReport {
                id: r.get::<_, i64>(0)? as u64,
                reporter: Addr {
                    user: r.get(1)?,
                    device: r.get(2)?,
                },
                sender: Addr {
                    user: r.get(3)?,
                    device: r.get(4)?,
                },
                server_ms: r.get::<_, i64>(5)? as u64,
                content: r.get(6)?,
                reason: r.get(7)?,
                tag: <[u8; 32]>::try_from(r.get::<_, Vec<u8>>(8)?.as_slice()).unwrap_or([0; 32]),
                received_ms: r.get::<_, i64>(9)? as u64,
                consent: r.get(10)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}
