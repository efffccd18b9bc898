//! The on-device store: one SQLite database (WAL, synchronous commits). Secrets and protocol
//! state are sealed with the app's storage key, each under its own label, so a blob moved
//! from one column to another does not open. Every change caused by one message is one
//! transaction.

use std::path::Path;

use hush_crypto::{StorageKey, Zeroizing};
use prost::Message as _;
use rusqlite::{Connection, OptionalExtension, params};

use crate::error::ClientError;
use crate::event::Address;

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
];

/// Seal labels: one per kind of record (SPEC §16.8).
pub(crate) use hush_crypto::labels::client_record as label;

/// One-time prekey secrets: (id, secret).
pub(crate) type PrekeySecrets = Vec<(u32, Zeroizing<Vec<u8>>)>;
/// An outbox entry: (seq, message id, draft if not encrypted yet).
pub(crate) type OutboxEntry = (i64, Vec<u8>, Option<crate::proto::client::Draft>);
/// Read receipts for one sender: (row ids, sender, message ids).
pub(crate) type PendingReads = (Vec<i64>, Address, Vec<Vec<u8>>);

/// The database and the key that seals it.
pub(crate) struct Store {
    conn: Connection,
    key: StorageKey,
}

/// One transaction, with the storage key at hand.
pub(crate) struct Tx<'a> {
    pub(crate) tx: rusqlite::Transaction<'a>,
    key: &'a StorageKey,
}

impl Store {
    pub(crate) fn open(path: &Path, key: StorageKey) -> Result<Self, ClientError> {
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        let version = conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))? as usize;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))?;
            tx.commit()?;
        }
        Ok(Self { conn, key })
    }

    /// Runs `f` in one transaction: all of it is committed, or none.
    pub(crate) fn transaction<T>(
        &mut self,
        f: impl FnOnce(&Tx<'_>) -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        let tx = Tx {
            tx: self.conn.transaction()?,
            key: &self.key,
        };
        let out = f(&tx)?;
        tx.tx.commit()?;
        Ok(out)
    }

    /// Runs `f` in a transaction that is always rolled back (for reads and trial decryptions).
    pub(crate) fn read<T>(
        &mut self,
        f: impl FnOnce(&Tx<'_>) -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        let tx = Tx {
            tx: self.conn.transaction()?,
            key: &self.key,
        };
        f(&tx)
    }
}

impl Tx<'_> {
    pub(crate) fn seal(&self, label: &[u8], bytes: &[u8]) -> Result<Vec<u8>, ClientError> {
        Ok(self.key.seal(label, bytes, &mut rand::rng())?)
    }

    pub(crate) fn open(
        &self,
        label: &[u8],
        blob: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, ClientError> {
        Ok(self.key.open(label, blob)?)
    }

    pub(crate) fn meta(&self, k: &str) -> Result<Option<Vec<u8>>, ClientError> {
        Ok(self
            .tx
            .query_row("SELECT v FROM meta WHERE k = ?1", params![k], |r| r.get(0))
            .optional()?)
    }

    pub(crate) fn set_meta(&self, k: &str, v: &[u8]) -> Result<(), ClientError> {
        self.tx.execute(
            "INSERT OR REPLACE INTO meta (k, v) VALUES (?1, ?2)",
            params![k, v],
        )?;
        Ok(())
    }

    pub(crate) fn meta_u64(&self, k: &str) -> Result<u64, ClientError> {
        Ok(self
            .meta(k)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
            .map_or(0, u64::from_be_bytes))
    }

    pub(crate) fn set_meta_u64(&self, k: &str, v: u64) -> Result<(), ClientError> {
        self.set_meta(k, &v.to_be_bytes())
    }

    // --- devices and sessions ---

    pub(crate) fn device_key(&self, a: &Address) -> Result<Option<Vec<u8>>, ClientError> {
        Ok(self
            .tx
            .query_row(
                "SELECT identity_key FROM devices WHERE user_id = ?1 AND device_id = ?2",
                params![a.user, a.device],
                |r| r.get(0),
            )
            .optional()?)
    }

    pub(crate) fn devices_of(&self, user: &str) -> Result<Vec<(u32, Vec<u8>)>, ClientError> {
        let mut s = self.tx.prepare_cached(
            "SELECT device_id, identity_key FROM devices WHERE user_id = ?1 ORDER BY device_id",
        )?;
        let rows = s
            .query_map(params![user], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    pub(crate) fn set_device_key(&self, a: &Address, key: &[u8]) -> Result<(), ClientError> {
        self.tx.execute(
            "INSERT OR REPLACE INTO devices (user_id, device_id, identity_key) VALUES (?1, ?2, ?3)",
            params![a.user, a.device, key],
        )?;
        Ok(())
    }

    pub(crate) fn forget_device(&self, a: &Address) -> Result<(), ClientError> {
        self.tx.execute(
            "DELETE FROM devices WHERE user_id = ?1 AND device_id = ?2",
            params![a.user, a.device],
        )?;
        self.delete_session(a)
    }

    pub(crate) fn session(
        &self,
        a: &Address,
    ) -> Result<Option<hush_sessions::Session>, ClientError> {
        let blob: Option<Vec<u8>> = self
            .tx
            .query_row(
                "SELECT sealed FROM sessions WHERE user_id = ?1 AND device_id = ?2",
                params![a.user, a.device],
                |r| r.get(0),
            )
            .optional()?;
        match blob {
            None => Ok(None),
            Some(b) => {
                let bytes = self.open(label::SESSION, &b)?;
                Ok(Some(
                    hush_sessions::Session::from_bytes(&bytes).map_err(|_| ClientError::Sealed)?,
                ))
            }
        }
    }

    pub(crate) fn save_session(
        &self,
        a: &Address,
        s: &hush_sessions::Session,
    ) -> Result<(), ClientError> {
        let sealed = self.seal(label::SESSION, &s.to_bytes())?;
        self.tx.execute(
            "INSERT OR REPLACE INTO sessions (user_id, device_id, sealed) VALUES (?1, ?2, ?3)",
            params![a.user, a.device, sealed],
        )?;
        Ok(())
    }

    pub(crate) fn delete_session(&self, a: &Address) -> Result<(), ClientError> {
        self.tx.execute(
            "DELETE FROM sessions WHERE user_id = ?1 AND device_id = ?2",
            params![a.user, a.device],
        )?;
        Ok(())
    }

    // --- prekeys ---

    pub(crate) fn put_signed_prekey(
        &self,
        id: u32,
        secret: &[u8],
        now_ms: u64,
    ) -> Result<(), ClientError> {
        let sealed = self.seal(label::SIGNED_PREKEY, secret)?;
        self.tx.execute(
            "INSERT OR REPLACE INTO signed_prekeys (id, sealed, created_ms) VALUES (?1, ?2, ?3)",
            params![id, sealed, now_ms as i64],
        )?;
        Ok(())
    }

    pub(crate) fn signed_prekey(&self, id: u32) -> Result<Option<Zeroizing<Vec<u8>>>, ClientError> {
        let blob: Option<Vec<u8>> = self
            .tx
            .query_row(
                "SELECT sealed FROM signed_prekeys WHERE id = ?1",
                params![id],
                |r| r.get(0),
            )
            .optional()?;
        blob.map(|b| self.open(label::SIGNED_PREKEY, &b))
            .transpose()
    }

    /// Deletes signed prekeys created before `before_ms`, except `keep`.
    pub(crate) fn prune_signed_prekeys(
        &self,
        before_ms: u64,
        keep: u32,
    ) -> Result<(), ClientError> {
        self.tx.execute(
            "DELETE FROM signed_prekeys WHERE created_ms < ?1 AND id != ?2",
            params![before_ms as i64, keep],
        )?;
        Ok(())
    }

    pub(crate) fn put_one_time_prekey(&self, id: u32, secret: &[u8]) -> Result<(), ClientError> {
        let sealed = self.seal(label::ONE_TIME_PREKEY, secret)?;
        self.tx.execute(
            "INSERT OR REPLACE INTO one_time_prekeys (id, sealed, uploaded) VALUES (?1, ?2, 0)",
            params![id, sealed],
        )?;
        Ok(())
    }

    pub(crate) fn one_time_prekey(
        &self,
        id: u32,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, ClientError> {
        let blob: Option<Vec<u8>> = self
            .tx
            .query_row(
                "SELECT sealed FROM one_time_prekeys WHERE id = ?1",
                params![id],
                |r| r.get(0),
            )
            .optional()?;
        blob.map(|b| self.open(label::ONE_TIME_PREKEY, &b))
            .transpose()
    }

    pub(crate) fn delete_one_time_prekey(&self, id: u32) -> Result<(), ClientError> {
        self.tx
            .execute("DELETE FROM one_time_prekeys WHERE id = ?1", params![id])?;
        Ok(())
    }

    /// One-time prekeys generated but not yet uploaded: (id, secret).
    pub(crate) fn unuploaded_prekeys(&self) -> Result<PrekeySecrets, ClientError> {
        let mut s = self.tx.prepare(
            "SELECT id, sealed FROM one_time_prekeys WHERE uploaded = 0 ORDER BY id LIMIT 500",
        )?;
        let rows = s
            .query_map([], |r| Ok((r.get::<_, u32>(0)?, r.get::<_, Vec<u8>>(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|(id, b)| Ok((id, self.open(label::ONE_TIME_PREKEY, &b)?)))
            .collect()
    }

    pub(crate) fn mark_uploaded(&self, ids: &[u32]) -> Result<(), ClientError> {
        let mut s = self
            .tx
            .prepare_cached("UPDATE one_time_prekeys SET uploaded = 1 WHERE id = ?1")?;
        for id in ids {
            s.execute(params![id])?;
        }
        Ok(())
    }

    // --- groups ---

    pub(crate) fn group(
        &self,
        id: &[u8],
    ) -> Result<Option<crate::proto::client::GroupRecord>, ClientError> {
        let blob: Option<Vec<u8>> = self
            .tx
            .query_row(
                "SELECT sealed FROM groups WHERE group_id = ?1",
                params![id],
                |r| r.get(0),
            )
            .optional()?;
        match blob {
            None => Ok(None),
            Some(b) => {
                let bytes = self.open(label::GROUP, &b)?;
                Ok(Some(crate::proto::client::GroupRecord::decode(&bytes[..])?))
            }
        }
    }

    pub(crate) fn save_group(
        &self,
        id: &[u8],
        record: &crate::proto::client::GroupRecord,
    ) -> Result<(), ClientError> {
        let bytes = Zeroizing::new(record.encode_to_vec());
        let sealed = self.seal(label::GROUP, &bytes)?;
        self.tx.execute(
            "INSERT OR REPLACE INTO groups (group_id, sealed) VALUES (?1, ?2)",
            params![id, sealed],
        )?;
        Ok(())
    }

    pub(crate) fn group_ids(&self) -> Result<Vec<Vec<u8>>, ClientError> {
        let mut s = self.tx.prepare("SELECT group_id FROM groups")?;
        let rows = s
            .query_map([], |r| r.get(0))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    // --- outbox ---

    pub(crate) fn push_draft(
        &self,
        message_id: &[u8],
        draft: &crate::proto::client::Draft,
        now_ms: u64,
    ) -> Result<i64, ClientError> {
        let bytes = Zeroizing::new(draft.encode_to_vec());
        let sealed = self.seal(label::DRAFT, &bytes)?;
        self.tx.execute(
            "INSERT INTO outbox (message_id, draft, created_ms) VALUES (?1, ?2, ?3)",
            params![message_id, sealed, now_ms as i64],
        )?;
        Ok(self.tx.last_insert_rowid())
    }

    /// The oldest outbox entry: (seq, message id, draft if not encrypted yet).
    pub(crate) fn next_outbox(&self) -> Result<Option<OutboxEntry>, ClientError> {
        let row: Option<(i64, Vec<u8>, Option<Vec<u8>>)> = self
            .tx
            .query_row(
                "SELECT seq, message_id, draft FROM outbox ORDER BY seq LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let Some((seq, mid, draft)) = row else {
            return Ok(None);
        };
        let draft = match draft {
            None => None,
            Some(b) => {
                let bytes = self.open(label::DRAFT, &b)?;
                Some(crate::proto::client::Draft::decode(&bytes[..])?)
            }
        };
        Ok(Some((seq, mid, draft)))
    }

    /// Replaces the draft of `seq` by its encrypted envelopes.
    pub(crate) fn set_ready(
        &self,
        seq: i64,
        ready: &[crate::proto::client::Ready],
    ) -> Result<(), ClientError> {
        for (i, r) in ready.iter().enumerate() {
            let sealed = self.seal(label::READY, &r.encode_to_vec())?;
            self.tx.execute(
                "INSERT INTO outbox_ready (seq, idx, sealed) VALUES (?1, ?2, ?3)",
                params![seq, i as i64, sealed],
            )?;
        }
        self.tx.execute(
            "UPDATE outbox SET draft = NULL WHERE seq = ?1",
            params![seq],
        )?;
        Ok(())
    }

    pub(crate) fn next_ready(
        &self,
        seq: i64,
    ) -> Result<Option<(i64, crate::proto::client::Ready)>, ClientError> {
        let row: Option<(i64, Vec<u8>)> = self
            .tx
            .query_row(
                "SELECT idx, sealed FROM outbox_ready WHERE seq = ?1 ORDER BY idx LIMIT 1",
                params![seq],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        row.map(|(idx, b)| {
            let bytes = self.open(label::READY, &b)?;
            Ok((idx, crate::proto::client::Ready::decode(&bytes[..])?))
        })
        .transpose()
    }

    pub(crate) fn done_ready(&self, seq: i64, idx: i64) -> Result<(), ClientError> {
        self.tx.execute(
            "DELETE FROM outbox_ready WHERE seq = ?1 AND idx = ?2",
            params![seq, idx],
        )?;
        Ok(())
    }

    pub(crate) fn done_outbox(&self, seq: i64) -> Result<(), ClientError> {
        self.tx
            .execute("DELETE FROM outbox_ready WHERE seq = ?1", params![seq])?;
        self.tx
            .execute("DELETE FROM outbox WHERE seq = ?1", params![seq])?;
        Ok(())
    }

    pub(crate) fn outbox_len(&self) -> Result<u64, ClientError> {
        Ok(self
            .tx
            .query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get::<_, i64>(0))?
            as u64)
    }

    pub(crate) fn push_read(&self, from: &Address, message_id: &[u8]) -> Result<(), ClientError> {
        self.tx.execute(
            "INSERT INTO pending_reads (user_id, device_id, message_id) VALUES (?1, ?2, ?3)",
            params![from.user, from.device, message_id],
        )?;
        Ok(())
    }

    /// Up to 64 pending read receipts for one sender: (ids, sender, message ids).
    pub(crate) fn pending_reads(&self) -> Result<Option<PendingReads>, ClientError> {
        let first: Option<(String, u32)> = self
            .tx
            .query_row(
                "SELECT user_id, device_id FROM pending_reads ORDER BY id LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((user, device)) = first else {
            return Ok(None);
        };
        let mut s = self.tx.prepare(
            "SELECT id, message_id FROM pending_reads WHERE user_id = ?1 AND device_id = ?2 ORDER BY id LIMIT 64",
        )?;
        let rows = s
            .query_map(params![user, device], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let (ids, mids) = rows.into_iter().unzip();
        Ok(Some((ids, Address::new(user, device), mids)))
    }

    pub(crate) fn done_reads(&self, ids: &[i64]) -> Result<(), ClientError> {
        let mut s = self
            .tx
            .prepare_cached("DELETE FROM pending_reads WHERE id = ?1")?;
        for id in ids {
            s.execute(params![id])?;
        }
        Ok(())
    }

    // --- received messages ---

    pub(crate) fn processed(&self, from: &Address, message_id: &[u8]) -> Result<bool, ClientError> {
        Ok(self
            .tx
            .query_row(
                "SELECT 1 FROM processed WHERE user_id = ?1 AND device_id = ?2 AND message_id = ?3",
                params![from.user, from.device, message_id],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    pub(crate) fn mark_processed(
        &self,
        from: &Address,
        message_id: &[u8],
        now_ms: u64,
    ) -> Result<(), ClientError> {
        self.tx.execute(
            "INSERT OR IGNORE INTO processed (user_id, device_id, message_id, at_ms) VALUES (?1, ?2, ?3, ?4)",
            params![from.user, from.device, message_id, now_ms as i64],
        )?;
        Ok(())
    }

    pub(crate) fn put_message(
        &self,
        m: &crate::proto::client::StoredMessage,
        now_ms: u64,
    ) -> Result<(), ClientError> {
        let bytes = Zeroizing::new(m.encode_to_vec());
        let sealed = self.seal(label::MESSAGE, &bytes)?;
        self.tx.execute(
            "INSERT INTO messages (sealed, at_ms) VALUES (?1, ?2)",
            params![sealed, now_ms as i64],
        )?;
        Ok(())
    }

    pub(crate) fn messages(&self) -> Result<Vec<crate::proto::client::StoredMessage>, ClientError> {
        let mut s = self.tx.prepare("SELECT sealed FROM messages ORDER BY id")?;
        let rows = s
            .query_map([], |r| r.get::<_, Vec<u8>>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|b| {
                let bytes = self.open(label::MESSAGE, &b)?;
                Ok(crate::proto::client::StoredMessage::decode(&bytes[..])?)
            })
            .collect()
    }

    pub(crate) fn put_tick(
        &self,
        message_id: &[u8],
        by: &Address,
        kind: u8,
        at_ms: u64,
    ) -> Result<bool, ClientError> {
        let n = self.tx.execute(
            "INSERT OR IGNORE INTO ticks (message_id, user_id, device_id, kind, at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![message_id, by.user, by.device, kind, at_ms as i64],
        )?;
        Ok(n == 1)
    }

    pub(crate) fn ticks(&self, message_id: &[u8]) -> Result<Vec<(Address, u8, u64)>, ClientError> {
        let mut s = self.tx.prepare(
            "SELECT user_id, device_id, kind, at_ms FROM ticks WHERE message_id = ?1 ORDER BY kind, user_id, device_id",
        )?;
        let rows = s
            .query_map(params![message_id], |r| {
                Ok((
                    Address::new(r.get::<_, String>(0)?, r.get(1)?),
                    r.get(2)?,
                    r.get::<_, i64>(3)? as u64,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }
}
