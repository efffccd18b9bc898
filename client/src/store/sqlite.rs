//! The SQLite backend: one database file per device (WAL, synchronous commits), the tables
//! of SPEC §16.8. Only sealed records and the plain columns that section lists are stored.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

use super::{HeldRow, OutboxRow, ReadsRow, Store, StoreError, StoreTx, Tick};
use crate::event::{Address, ReceiptKind};

/// The schema, one migration per version (`PRAGMA user_version`).
const MIGRATIONS: &[&str] = &[
    // 1
    "CREATE TABLE meta (k TEXT PRIMARY KEY, v BLOB NOT NULL);
     CREATE TABLE signed_prekeys (id INTEGER PRIMARY KEY, sealed BLOB NOT NULL, created_ms INTEGER NOT NULL);
     CREATE TABLE one_time_prekeys (id INTEGER PRIMARY KEY, sealed BLOB NOT NULL, uploaded INTEGER NOT NULL);
     CREATE TABLE devices (user_id TEXT NOT NULL, device_id INTEGER NOT NULL, identity_key BLOB NOT NULL,
        PRIMARY KEY (user_id, device_id));
     CREATE TABLE sessions (user_id TEXT NOT NULL, device_id INTEGER NOT NULL, sealed BLOB NOT NULL,
        PRIMARY KEY (user_id, device_id));
     CREATE TABLE groups (group_id BLOB PRIMARY KEY, sealed BLOB NOT NULL);
     CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, message_id BLOB NOT NULL,
        draft BLOB, created_ms INTEGER NOT NULL);
     CREATE TABLE outbox_ready (seq INTEGER NOT NULL, idx INTEGER NOT NULL, sealed BLOB NOT NULL,
        PRIMARY KEY (seq, idx));
     CREATE TABLE pending_reads (id INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT NOT NULL,
        device_id INTEGER NOT NULL, message_id BLOB NOT NULL);
     CREATE TABLE processed (user_id TEXT NOT NULL, device_id INTEGER NOT NULL, message_id BLOB NOT NULL,
        at_ms INTEGER NOT NULL, PRIMARY KEY (user_id, device_id, message_id));
     CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT, sealed BLOB NOT NULL, at_ms INTEGER NOT NULL);
     CREATE TABLE ticks (message_id BLOB NOT NULL, user_id TEXT NOT NULL, device_id INTEGER NOT NULL,
        kind INTEGER NOT NULL, at_ms INTEGER NOT NULL, PRIMARY KEY (message_id, user_id, device_id, kind));",
    // 2: sessions replaced by a newer one, tried when the current one does not decrypt.
    "CREATE TABLE previous_sessions (user_id TEXT NOT NULL, device_id INTEGER NOT NULL,
        idx INTEGER NOT NULL, sealed BLOB NOT NULL, PRIMARY KEY (user_id, device_id, idx));",
    // 3: when the relay handed each one-time prekey out (deleted after a grace window).
    "ALTER TABLE one_time_prekeys ADD COLUMN handed_out_ms INTEGER;",
    // 4: records that did not open or decode, kept out of the way (SPEC §16.8).
    "CREATE TABLE set_aside (id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL,
        key BLOB NOT NULL, sealed BLOB NOT NULL, at_ms INTEGER NOT NULL);",
    // 5: post-quantum prekeys (SPEC §16.8): one-time KEM prekeys kept like one-time
    // prekeys, last-resort KEM prekeys like signed prekeys, and the uses of last-resort
    // keys, refused a second time (SPEC §6.2).
    "CREATE TABLE kem_prekeys (id INTEGER PRIMARY KEY, sealed BLOB NOT NULL,
        uploaded INTEGER NOT NULL, handed_out_ms INTEGER);
     CREATE TABLE last_resort_kem_prekeys (id INTEGER PRIMARY KEY, sealed BLOB NOT NULL,
        created_ms INTEGER NOT NULL);
     CREATE TABLE kem_prekey_uses (kem_id INTEGER NOT NULL, signed_prekey_id INTEGER NOT NULL,
        base_key BLOB NOT NULL, PRIMARY KEY (kem_id, signed_prekey_id, base_key)) WITHOUT ROWID;",
    // 6: an encrypted outbox entry keeps its draft until it is done, to encrypt it again
    // if the relay refuses a send for a stale device list (SPEC §16.4).
    "ALTER TABLE outbox ADD COLUMN kept_draft BLOB;",
    // 7: group messages and sender keys that came before the group change they need
    // (SPEC §16.9).
    "CREATE TABLE held (id INTEGER PRIMARY KEY AUTOINCREMENT, group_id BLOB NOT NULL,
        user_id TEXT NOT NULL, device_id INTEGER NOT NULL, sealed BLOB NOT NULL, at_ms INTEGER NOT NULL);
     CREATE INDEX held_by_group ON held (group_id, id);",
];

/// The `ticks.kind` column: sent 0, delivered 1, read 2, queued 255.
const fn tick_code(t: Tick) -> i64 {
    match t {
        Tick::Receipt(ReceiptKind::Sent) => 0,
        Tick::Receipt(ReceiptKind::Delivered) => 1,
        Tick::Receipt(ReceiptKind::Read) => 2,
        Tick::Queued => 255,
        Tick::Addressed => 254,
    }
}

const fn tick_of(code: i64) -> Option<Tick> {
    match code {
        0 => Some(Tick::Receipt(ReceiptKind::Sent)),
        1 => Some(Tick::Receipt(ReceiptKind::Delivered)),
        2 => Some(Tick::Receipt(ReceiptKind::Read)),
        255 => Some(Tick::Queued),
        254 => Some(Tick::Addressed),
        _ => None,
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        Self::backend(e)
    }
}

/// A device's SQLite database.
pub struct SqliteStore {
    conn: Connection,
}

impl SqliteStore {
    /// Opens (creating and migrating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        let version = conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))?;
        let version = usize::try_from(version).unwrap_or(usize::MAX);
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))?;
            tx.commit()?;
        }
        Ok(Self { conn })
    }
}

impl Store for SqliteStore {
    fn begin(&mut self) -> Result<Box<dyn StoreTx + '_>, StoreError> {
        Ok(Box::new(SqliteTx(self.conn.transaction()?)))
    }
}

/// A SQLite transaction (rolled back when dropped uncommitted).
struct SqliteTx<'a>(rusqlite::Transaction<'a>);

/// The tables of keys used once: one-time prekeys and one-time KEM prekeys, alike.
const ONE_TIME: &str = "one_time_prekeys";
const KEM: &str = "kem_prekeys";

impl SqliteTx<'_> {
    fn put_once(&self, table: &str, id: u32, sealed: &[u8]) -> Result<(), StoreError> {
        self.0.execute(
            &format!("INSERT OR REPLACE INTO {table} (id, sealed, uploaded) VALUES (?1, ?2, 0)"),
            params![id, sealed],
        )?;
        Ok(())
    }

    fn get_once(&self, table: &str, id: u32) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .0
            .query_row(
                &format!("SELECT sealed FROM {table} WHERE id = ?1"),
                params![id],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn delete_once(&self, table: &str, id: u32) -> Result<(), StoreError> {
        self.0
            .execute(&format!("DELETE FROM {table} WHERE id = ?1"), params![id])?;
        Ok(())
    }

    fn unuploaded(&self, table: &str, limit: usize) -> Result<Vec<(u32, Vec<u8>)>, StoreError> {
        let mut s = self.0.prepare_cached(&format!(
            "SELECT id, sealed FROM {table} WHERE uploaded = 0 ORDER BY id LIMIT ?1"
        ))?;
        let rows = s
            .query_map(params![ms(limit as u64)], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn mark_uploaded_in(&self, table: &str, ids: &[u32]) -> Result<(), StoreError> {
        let mut s = self
            .0
            .prepare_cached(&format!("UPDATE {table} SET uploaded = 1 WHERE id = ?1"))?;
        for id in ids {
            s.execute(params![id])?;
        }
        Ok(())
    }

    fn set_stock(&self, table: &str, remaining: u64, now_ms: u64) -> Result<(), StoreError> {
        let kept = format!("SELECT id FROM {table} WHERE uploaded = 1 ORDER BY id DESC LIMIT ?1");
        self.0.execute(
            &format!("UPDATE {table} SET handed_out_ms = NULL WHERE id IN ({kept})"),
            params![ms(remaining)],
        )?;
        self.0.execute(
            &format!(
                "UPDATE {table} SET handed_out_ms = ?2 WHERE uploaded = 1
                 AND handed_out_ms IS NULL AND id NOT IN ({kept})"
            ),
            params![ms(remaining), ms(now_ms)],
        )?;
        Ok(())
    }

    fn prune_handed_out_of(&self, table: &str, before_ms: u64) -> Result<u64, StoreError> {
        Ok(self.0.execute(
            &format!("DELETE FROM {table} WHERE handed_out_ms <= ?1"),
            params![ms(before_ms)],
        )? as u64)
    }
}

fn ms(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl StoreTx for SqliteTx<'_> {
    fn commit(self: Box<Self>) -> Result<(), StoreError> {
        Ok(self.0.commit()?)
    }

    fn meta(&self, k: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .0
            .query_row("SELECT v FROM meta WHERE k = ?1", params![k], |r| r.get(0))
            .optional()?)
    }

    fn set_meta(&self, k: &str, v: &[u8]) -> Result<(), StoreError> {
        self.0.execute(
            "INSERT OR REPLACE INTO meta (k, v) VALUES (?1, ?2)",
            params![k, v],
        )?;
        Ok(())
    }

    fn device_key(&self, a: &Address) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .0
            .query_row(
                "SELECT identity_key FROM devices WHERE user_id = ?1 AND device_id = ?2",
                params![a.user, a.device],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn devices_of(&self, user: &str) -> Result<Vec<(u32, Vec<u8>)>, StoreError> {
        let mut s = self.0.prepare_cached(
            "SELECT device_id, identity_key FROM devices WHERE user_id = ?1 ORDER BY device_id",
        )?;
        let rows = s
            .query_map(params![user], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn set_device_key(&self, a: &Address, key: &[u8]) -> Result<(), StoreError> {
        self.0.execute(
            "INSERT OR REPLACE INTO devices (user_id, device_id, identity_key) VALUES (?1, ?2, ?3)",
            params![a.user, a.device, key],
        )?;
        Ok(())
    }

    fn forget_device(&self, a: &Address) -> Result<(), StoreError> {
        self.0.execute(
            "DELETE FROM devices WHERE user_id = ?1 AND device_id = ?2",
            params![a.user, a.device],
        )?;
        self.set_previous_sessions(a, &[])?;
        self.delete_session(a)
    }

    fn session(&self, a: &Address) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .0
            .query_row(
                "SELECT sealed FROM sessions WHERE user_id = ?1 AND device_id = ?2",
                params![a.user, a.device],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn put_session(&self, a: &Address, sealed: &[u8]) -> Result<(), StoreError> {
        self.0.execute(
            "INSERT OR REPLACE INTO sessions (user_id, device_id, sealed) VALUES (?1, ?2, ?3)",
            params![a.user, a.device, sealed],
        )?;
        Ok(())
    }

    fn delete_session(&self, a: &Address) -> Result<(), StoreError> {
        self.0.execute(
            "DELETE FROM sessions WHERE user_id = ?1 AND device_id = ?2",
            params![a.user, a.device],
        )?;
        Ok(())
    }

    fn previous_sessions(&self, a: &Address) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut s = self.0.prepare_cached(
            "SELECT sealed FROM previous_sessions WHERE user_id = ?1 AND device_id = ?2 ORDER BY idx",
        )?;
        let rows = s
            .query_map(params![a.user, a.device], |r| r.get(0))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn set_previous_sessions(&self, a: &Address, sealed: &[Vec<u8>]) -> Result<(), StoreError> {
        self.0.execute(
            "DELETE FROM previous_sessions WHERE user_id = ?1 AND device_id = ?2",
            params![a.user, a.device],
        )?;
        for (i, s) in sealed.iter().enumerate() {
            self.0.execute(
                "INSERT INTO previous_sessions (user_id, device_id, idx, sealed) VALUES (?1, ?2, ?3, ?4)",
                params![a.user, a.device, ms(i as u64), s],
            )?;
        }
        Ok(())
    }

    fn put_signed_prekey(&self, id: u32, sealed: &[u8], created_ms: u64) -> Result<(), StoreError> {
        self.0.execute(
            "INSERT OR REPLACE INTO signed_prekeys (id, sealed, created_ms) VALUES (?1, ?2, ?3)",
            params![id, sealed, ms(created_ms)],
        )?;
        Ok(())
    }

    fn signed_prekey(&self, id: u32) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .0
            .query_row(
                "SELECT sealed FROM signed_prekeys WHERE id = ?1",
                params![id],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn prune_signed_prekeys(&self, before_ms: u64, keep: [u32; 2]) -> Result<(), StoreError> {
        self.0.execute(
            "DELETE FROM signed_prekeys WHERE created_ms < ?1 AND id != ?2 AND id != ?3",
            params![ms(before_ms), keep[0], keep[1]],
        )?;
        Ok(())
    }

    fn put_one_time_prekey(&self, id: u32, sealed: &[u8]) -> Result<(), StoreError> {
        self.put_once(ONE_TIME, id, sealed)
    }

    fn one_time_prekey(&self, id: u32) -> Result<Option<Vec<u8>>, StoreError> {
        self.get_once(ONE_TIME, id)
    }

    fn delete_one_time_prekey(&self, id: u32) -> Result<(), StoreError> {
        self.delete_once(ONE_TIME, id)
    }

    fn unuploaded_prekeys(&self, limit: usize) -> Result<Vec<(u32, Vec<u8>)>, StoreError> {
        self.unuploaded(ONE_TIME, limit)
    }

    fn mark_uploaded(&self, ids: &[u32]) -> Result<(), StoreError> {
        self.mark_uploaded_in(ONE_TIME, ids)
    }

    fn set_prekey_stock(&self, remaining: u64, now_ms: u64) -> Result<(), StoreError> {
        self.set_stock(ONE_TIME, remaining, now_ms)
    }

    fn prune_handed_out(&self, before_ms: u64) -> Result<u64, StoreError> {
        self.prune_handed_out_of(ONE_TIME, before_ms)
    }

    fn put_kem_prekey(&self, id: u32, sealed: &[u8]) -> Result<(), StoreError> {
        self.put_once(KEM, id, sealed)
    }

    fn kem_prekey(&self, id: u32) -> Result<Option<Vec<u8>>, StoreError> {
        self.get_once(KEM, id)
    }

    fn delete_kem_prekey(&self, id: u32) -> Result<(), StoreError> {
        self.delete_once(KEM, id)
    }

    fn unuploaded_kem_prekeys(&self, limit: usize) -> Result<Vec<(u32, Vec<u8>)>, StoreError> {
        self.unuploaded(KEM, limit)
    }

    fn mark_kem_uploaded(&self, ids: &[u32]) -> Result<(), StoreError> {
        self.mark_uploaded_in(KEM, ids)
    }

    fn set_kem_stock(&self, remaining: u64, now_ms: u64) -> Result<(), StoreError> {
        self.set_stock(KEM, remaining, now_ms)
    }

    fn prune_kem_handed_out(&self, before_ms: u64) -> Result<u64, StoreError> {
        self.prune_handed_out_of(KEM, before_ms)
    }

    fn put_last_resort_kem_prekey(
        &self,
        id: u32,
        sealed: &[u8],
        created_ms: u64,
    ) -> Result<(), StoreError> {
        self.0.execute(
            "INSERT OR REPLACE INTO last_resort_kem_prekeys (id, sealed, created_ms) VALUES (?1, ?2, ?3)",
            params![id, sealed, ms(created_ms)],
        )?;
        Ok(())
    }

    fn last_resort_kem_prekey(&self, id: u32) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .0
            .query_row(
                "SELECT sealed FROM last_resort_kem_prekeys WHERE id = ?1",
                params![id],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn prune_last_resort_kem_prekeys(
        &self,
        before_ms: u64,
        keep: [u32; 2],
    ) -> Result<(), StoreError> {
        self.0.execute(
            "DELETE FROM last_resort_kem_prekeys WHERE created_ms < ?1 AND id != ?2 AND id != ?3",
            params![ms(before_ms), keep[0], keep[1]],
        )?;
        self.0.execute(
            "DELETE FROM kem_prekey_uses WHERE kem_id NOT IN (SELECT id FROM last_resort_kem_prekeys)",
            [],
        )?;
        Ok(())
    }

    fn kem_prekey_used(
        &self,
        kem_id: u32,
        signed_prekey_id: u32,
        base_key: &[u8],
    ) -> Result<bool, StoreError> {
        Ok(self
            .0
            .query_row(
                "SELECT 1 FROM kem_prekey_uses WHERE kem_id = ?1 AND signed_prekey_id = ?2 AND base_key = ?3",
                params![kem_id, signed_prekey_id, base_key],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    fn record_kem_prekey_use(
        &self,
        kem_id: u32,
        signed_prekey_id: u32,
        base_key: &[u8],
    ) -> Result<(), StoreError> {
        self.0.execute(
            "INSERT OR IGNORE INTO kem_prekey_uses (kem_id, signed_prekey_id, base_key) VALUES (?1, ?2, ?3)",
            params![kem_id, signed_prekey_id, base_key],
        )?;
        Ok(())
    }

    fn group(&self, id: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .0
            .query_row(
                "SELECT sealed FROM groups WHERE group_id = ?1",
                params![id],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn put_group(&self, id: &[u8], sealed: &[u8]) -> Result<(), StoreError> {
        self.0.execute(
            "INSERT OR REPLACE INTO groups (group_id, sealed) VALUES (?1, ?2)",
            params![id, sealed],
        )?;
        Ok(())
    }

    fn delete_group(&self, id: &[u8]) -> Result<(), StoreError> {
        self.0
            .execute("DELETE FROM groups WHERE group_id = ?1", params![id])?;
        Ok(())
    }

    fn put_aside(
        &self,
        kind: &str,
        key: &[u8],
        sealed: &[u8],
        at_ms: u64,
    ) -> Result<(), StoreError> {
        self.0.execute(
            "INSERT INTO set_aside (kind, key, sealed, at_ms) VALUES (?1, ?2, ?3, ?4)",
            params![kind, key, sealed, ms(at_ms)],
        )?;
        Ok(())
    }

    fn hold(
        &self,
        group_id: &[u8],
        from: &Address,
        sealed: &[u8],
        at_ms: u64,
    ) -> Result<(), StoreError> {
        self.0
            .prepare_cached(
                "INSERT INTO held (group_id, user_id, device_id, sealed, at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![group_id, from.user, from.device, sealed, ms(at_ms)])?;
        Ok(())
    }

    fn held(&self, group_id: &[u8]) -> Result<Vec<(i64, u64, Vec<u8>)>, StoreError> {
        let mut s = self
            .0
            .prepare_cached("SELECT id, at_ms, sealed FROM held WHERE group_id = ?1 ORDER BY id")?;
        let rows = s
            .query_map([group_id], |r| {
                Ok((r.get(0)?, r.get::<_, i64>(1)? as u64, r.get(2)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn oldest_held_from(&self, group_id: &[u8], from: &Address) -> Result<Option<u64>, StoreError> {
        let at: Option<i64> = self
            .0
            .prepare_cached(
                "SELECT MIN(at_ms) FROM held WHERE group_id = ?1 AND user_id = ?2 AND device_id = ?3",
            )?
            .query_row(params![group_id, from.user, from.device], |r| r.get(0))?;
        Ok(at.map(|a| a as u64))
    }

    fn held_before(&self, before_ms: u64) -> Result<Vec<HeldRow>, StoreError> {
        let mut s = self.0.prepare_cached(
            "SELECT id, group_id, user_id, device_id FROM held WHERE at_ms < ?1 ORDER BY id",
        )?;
        let rows = s
            .query_map([ms(before_ms)], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    Address::new(r.get::<_, String>(2)?, r.get(3)?),
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn held_senders(&self) -> Result<Vec<(Address, u64, i64)>, StoreError> {
        let mut s = self.0.prepare_cached(
            "SELECT user_id, device_id, COUNT(*), MIN(id) FROM held GROUP BY user_id, device_id ORDER BY user_id, device_id",
        )?;
        let rows = s
            .query_map([], |r| {
                Ok((
                    Address::new(r.get::<_, String>(0)?, r.get(1)?),
                    r.get::<_, i64>(2)? as u64,
                    r.get(3)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn oldest_held_of(&self, from: &Address) -> Result<Option<(i64, Vec<u8>)>, StoreError> {
        Ok(self
            .0
            .prepare_cached(
                "SELECT id, group_id FROM held WHERE user_id = ?1 AND device_id = ?2 ORDER BY id LIMIT 1",
            )?
            .query_row(params![from.user, from.device], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?)
    }

    fn release(&self, id: i64) -> Result<(), StoreError> {
        self.0
            .prepare_cached("DELETE FROM held WHERE id = ?1")?
            .execute([id])?;
        Ok(())
    }

    fn set_aside_count(&self) -> Result<u64, StoreError> {
        let n: i64 = self
            .0
            .query_row("SELECT COUNT(*) FROM set_aside", [], |r| r.get(0))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    fn group_ids(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut s = self.0.prepare("SELECT group_id FROM groups")?;
        let rows = s
            .query_map([], |r| r.get(0))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn push_draft(&self, message_id: &[u8], sealed: &[u8], now_ms: u64) -> Result<i64, StoreError> {
        self.0.execute(
            "INSERT INTO outbox (message_id, draft, created_ms) VALUES (?1, ?2, ?3)",
            params![message_id, sealed, ms(now_ms)],
        )?;
        Ok(self.0.last_insert_rowid())
    }

    fn next_outbox(&self, after: i64) -> Result<Option<OutboxRow>, StoreError> {
        Ok(self
            .0
            .query_row(
                "SELECT seq, message_id, draft FROM outbox WHERE seq > ?1 ORDER BY seq LIMIT 1",
                params![after],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?)
    }

    fn set_ready(&self, seq: i64, sealed: &[Vec<u8>]) -> Result<(), StoreError> {
        for (i, r) in sealed.iter().enumerate() {
            self.0.execute(
                "INSERT INTO outbox_ready (seq, idx, sealed) VALUES (?1, ?2, ?3)",
                params![seq, ms(i as u64), r],
            )?;
        }
        self.0.execute(
            "UPDATE outbox SET kept_draft = draft, draft = NULL WHERE seq = ?1 AND draft IS NOT NULL",
            params![seq],
        )?;
        Ok(())
    }

    fn restore_draft(&self, seq: i64) -> Result<bool, StoreError> {
        let restored = self.0.execute(
            "UPDATE outbox SET draft = kept_draft, kept_draft = NULL WHERE seq = ?1 AND kept_draft IS NOT NULL",
            params![seq],
        )?;
        if restored > 0 {
            self.0
                .execute("DELETE FROM outbox_ready WHERE seq = ?1", params![seq])?;
        }
        Ok(restored > 0)
    }

    fn next_ready(&self, seq: i64, after: i64) -> Result<Option<(i64, Vec<u8>)>, StoreError> {
        Ok(self
            .0
            .query_row(
                "SELECT idx, sealed FROM outbox_ready WHERE seq = ?1 AND idx > ?2 ORDER BY idx LIMIT 1",
                params![seq, after],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    fn done_ready(&self, seq: i64, idx: i64) -> Result<(), StoreError> {
        self.0.execute(
            "DELETE FROM outbox_ready WHERE seq = ?1 AND idx = ?2",
            params![seq, idx],
        )?;
        Ok(())
    }

    fn replace_ready(&self, seq: i64, idx: i64, sealed: &[u8]) -> Result<(), StoreError> {
        self.0.execute(
            "UPDATE outbox_ready SET sealed = ?3 WHERE seq = ?1 AND idx = ?2",
            params![seq, idx, sealed],
        )?;
        Ok(())
    }

    fn done_outbox(&self, seq: i64) -> Result<(), StoreError> {
        self.0
            .execute("DELETE FROM outbox_ready WHERE seq = ?1", params![seq])?;
        self.0
            .execute("DELETE FROM outbox WHERE seq = ?1", params![seq])?;
        Ok(())
    }

    fn outbox_len(&self) -> Result<u64, StoreError> {
        let n = self
            .0
            .query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get::<_, i64>(0))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    fn push_read(&self, from: &Address, message_id: &[u8]) -> Result<(), StoreError> {
        self.0.execute(
            "INSERT INTO pending_reads (user_id, device_id, message_id) VALUES (?1, ?2, ?3)",
            params![from.user, from.device, message_id],
        )?;
        Ok(())
    }

    fn pending_reads(&self, limit: usize) -> Result<Option<ReadsRow>, StoreError> {
        let first: Option<(String, u32)> = self
            .0
            .query_row(
                "SELECT user_id, device_id FROM pending_reads ORDER BY id LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((user, device)) = first else {
            return Ok(None);
        };
        let mut s = self.0.prepare(
            "SELECT id, message_id FROM pending_reads WHERE user_id = ?1 AND device_id = ?2 ORDER BY id LIMIT ?3",
        )?;
        let rows = s
            .query_map(params![user, device, ms(limit as u64)], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let (ids, mids) = rows.into_iter().unzip();
        Ok(Some((ids, Address::new(user, device), mids)))
    }

    fn done_reads(&self, ids: &[i64]) -> Result<(), StoreError> {
        let mut s = self
            .0
            .prepare_cached("DELETE FROM pending_reads WHERE id = ?1")?;
        for id in ids {
            s.execute(params![id])?;
        }
        Ok(())
    }

    fn processed(&self, from: &Address, message_id: &[u8]) -> Result<bool, StoreError> {
        Ok(self
            .0
            .query_row(
                "SELECT 1 FROM processed WHERE user_id = ?1 AND device_id = ?2 AND message_id = ?3",
                params![from.user, from.device, message_id],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    fn mark_processed(
        &self,
        from: &Address,
        message_id: &[u8],
        now_ms: u64,
    ) -> Result<(), StoreError> {
        self.0.execute(
            "INSERT OR IGNORE INTO processed (user_id, device_id, message_id, at_ms) VALUES (?1, ?2, ?3, ?4)",
            params![from.user, from.device, message_id, ms(now_ms)],
        )?;
        Ok(())
    }

    fn put_message(&self, sealed: &[u8], now_ms: u64) -> Result<(), StoreError> {
        self.0.execute(
            "INSERT INTO messages (sealed, at_ms) VALUES (?1, ?2)",
            params![sealed, ms(now_ms)],
        )?;
        Ok(())
    }

    fn messages(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut s = self.0.prepare("SELECT sealed FROM messages ORDER BY id")?;
        let rows = s
            .query_map([], |r| r.get::<_, Vec<u8>>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn put_tick(
        &self,
        message_id: &[u8],
        by: &Address,
        tick: Tick,
        at_ms: u64,
    ) -> Result<bool, StoreError> {
        let n = self.0.execute(
            "INSERT OR IGNORE INTO ticks (message_id, user_id, device_id, kind, at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![message_id, by.user, by.device, tick_code(tick), ms(at_ms)],
        )?;
        Ok(n == 1)
    }

    fn has_tick(&self, message_id: &[u8], by: &Address, tick: Tick) -> Result<bool, StoreError> {
        Ok(self
            .0
            .prepare_cached(
                "SELECT 1 FROM ticks WHERE message_id = ?1 AND user_id = ?2 AND device_id = ?3 AND kind = ?4",
            )?
            .query_row(params![message_id, by.user, by.device, tick_code(tick)], |_| Ok(()))
            .optional()?
            .is_some())
    }

    fn ticks(&self, message_id: &[u8]) -> Result<Vec<(Address, Tick, u64)>, StoreError> {
        let mut s = self.0.prepare(
            "SELECT user_id, device_id, kind, at_ms FROM ticks WHERE message_id = ?1 ORDER BY kind, user_id, device_id",
        )?;
        let rows = s
            .query_map(params![message_id], |r| {
                Ok((
                    Address::new(r.get::<_, String>(0)?, r.get(1)?),
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        // Unknown kinds (a newer version's) are skipped.
        Ok(rows
            .into_iter()
            .filter_map(|(a, k, t)| Some((a, tick_of(k)?, u64::try_from(t).unwrap_or(0))))
            .collect())
    }
}
