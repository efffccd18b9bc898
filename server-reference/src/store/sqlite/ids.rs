//! Envelope and receipt ids, handed out on the database thread.

use rusqlite::{Connection, params};

use crate::store::StoreError;

/// Ids reserved at a time: the high-water mark in `id_marks` is written once per this many
/// (a few in unit tests, so they cross many marks).
const ID_BLOCK: u64 = if cfg!(test) { 4 } else { 1 << 16 };

/// Hands out envelope or receipt ids on the database thread, in increasing order. Each id
/// is above every id in its table, above the high-water mark in `id_marks` (written, in the
/// same transaction, before any id past it is used, so ids of rows already deleted are not
/// used again after a restart or a crash), and above the clock at start in milliseconds ×
/// 1024, so a database restored from an older copy does not reuse ids handed out after the
/// copy was made (unless the relay gave out more than 1,024 ids per millisecond on average).
pub(super) struct IdCounter {
    name: &'static str,
    next: u64,
    reserved: u64,
}

impl IdCounter {
    /// `clock_ms`: the time now, in milliseconds since the Unix epoch.
    pub(super) fn load(
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

    pub(super) fn take(&mut self, conn: &Connection) -> Result<u64, StoreError> {
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
    pub(super) fn unreserve(&mut self) {
        self.reserved = 0;
    }
}
