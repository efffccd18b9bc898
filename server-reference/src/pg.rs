//! The PostgreSQL store: the system of record when several relay nodes share one database.
//! Same behaviour as [`SqliteStore`](crate::SqliteStore): every operation is one
//! transaction, committed (synchronously, PostgreSQL's default) before the relay answers.
//!
//! Ordering: envelope ids come from a sequence, and a per-recipient row lock (on its
//! `mailbox_usage` row) is held from before the ids are drawn until commit, so each
//! device's envelopes commit in id order and a connection's cursor never skips one. Receipts
//! get the same guarantee from a transaction-scoped advisory lock on their owner.
//! One-time prekeys are taken with `FOR UPDATE SKIP LOCKED`: concurrent fetches through
//! different nodes hand out each key once.

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

use crate::store::{
    Addr, DeviceLookup, MailboxLimits, Store, StoreError, StoredBundle, StoredEnvelope,
    StoredPrekey, StoredReceipt,
};

/// The schema, one migration per version (table `hush_schema_version`).
const MIGRATIONS: &[&str] = &[
    // 1
    "CREATE TABLE devices (
        user_id TEXT NOT NULL, device_id BIGINT NOT NULL, identity_key BYTEA NOT NULL,
        registered_ms BIGINT NOT NULL, PRIMARY KEY (user_id, device_id));
     CREATE TABLE signed_prekeys (
        user_id TEXT NOT NULL, device_id BIGINT NOT NULL, id BIGINT NOT NULL, key BYTEA NOT NULL,
        signature BYTEA NOT NULL, PRIMARY KEY (user_id, device_id));
     CREATE TABLE one_time_prekeys (
        user_id TEXT NOT NULL, device_id BIGINT NOT NULL, id BIGINT NOT NULL, key BYTEA NOT NULL,
        PRIMARY KEY (user_id, device_id, id));
     CREATE TABLE messages (
        id BIGSERIAL PRIMARY KEY, sender_user TEXT NOT NULL, sender_device BIGINT NOT NULL,
        message_id BYTEA NOT NULL, server_ms BIGINT NOT NULL, expires_ms BIGINT NOT NULL,
        ciphertext BYTEA NOT NULL, refs BIGINT NOT NULL);
     CREATE INDEX messages_by_expiry ON messages (expires_ms);
     CREATE TABLE mailbox (
        envelope_id BIGSERIAL PRIMARY KEY, user_id TEXT NOT NULL, device_id BIGINT NOT NULL,
        message BIGINT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
        size BIGINT NOT NULL, expires_ms BIGINT NOT NULL);
     CREATE INDEX mailbox_by_device ON mailbox (user_id, device_id, envelope_id);
     CREATE INDEX mailbox_by_expiry ON mailbox (expires_ms);
     CREATE INDEX mailbox_by_message ON mailbox (message);
     CREATE TABLE mailbox_usage (
        user_id TEXT NOT NULL, device_id BIGINT NOT NULL, count BIGINT NOT NULL,
        bytes BIGINT NOT NULL, PRIMARY KEY (user_id, device_id));
     CREATE TABLE receipts (
        receipt_id BIGSERIAL PRIMARY KEY, user_id TEXT NOT NULL, device_id BIGINT NOT NULL,
        read BOOLEAN NOT NULL, recipient_user TEXT NOT NULL, recipient_device BIGINT NOT NULL,
        message_id BYTEA NOT NULL, at_ms BIGINT NOT NULL);
     CREATE INDEX receipts_by_device ON receipts (user_id, device_id, receipt_id);
     CREATE TABLE presence (user_id TEXT PRIMARY KEY, last_seen_ms BIGINT NOT NULL, hidden BOOLEAN NOT NULL);
     CREATE TABLE blobs (id TEXT PRIMARY KEY, size BIGINT NOT NULL, expires_ms BIGINT NOT NULL);
     CREATE INDEX blobs_by_expiry ON blobs (expires_ms);",
];

/// Key of the advisory lock that serialises migrations across nodes starting together.
const MIGRATION_LOCK: i64 = 0x6875_7368_0001;

/// The PostgreSQL store, with a connection pool.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
}

fn db(e: impl std::fmt::Display) -> StoreError {
    StoreError::Database(e.to_string())
}

fn valid_schema(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !s.as_bytes()[0].is_ascii_digit()
}

impl PgStore {
    /// Connects to `url` (a libpq-style connection string or URL) with a pool of at most
    /// `max_connections`, creates `schema` if given (tables then live there; lower-case
    /// letters, digits and `_`), and applies pending migrations.
    pub async fn connect(
        url: &str,
        schema: Option<&str>,
        max_connections: usize,
    ) -> Result<Self, StoreError> {
        let mut config: tokio_postgres::Config = url.parse().map_err(db)?;
        if let Some(s) = schema {
            if !valid_schema(s) {
                return Err(StoreError::Database("invalid schema name".into()));
            }
            let (client, conn) = config.connect(NoTls).await.map_err(db)?;
            let task = tokio::spawn(conn);
            client
                .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {s}"))
                .await
                .map_err(db)?;
            drop(client);
            let _ = task.await;
            config.options(format!("-c search_path={s}"));
        }
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(max_connections.max(1))
            .build()
            .map_err(db)?;
        let store = Self { pool };
        store.migrate().await?;
        Ok(store)
    }

    /// Drops `schema` and everything in it (for tests).
    pub async fn drop_schema(url: &str, schema: &str) -> Result<(), StoreError> {
        if !valid_schema(schema) {
            return Err(StoreError::Database("invalid schema name".into()));
        }
        let config: tokio_postgres::Config = url.parse().map_err(db)?;
        let (client, conn) = config.connect(NoTls).await.map_err(db)?;
        let task = tokio::spawn(conn);
        client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .await
            .map_err(db)?;
        drop(client);
        let _ = task.await;
        Ok(())
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut c = self.pool.get().await.map_err(db)?;
        let tx = c.transaction().await.map_err(db)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(db)?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS hush_schema_version (version BIGINT NOT NULL)",
        )
        .await
        .map_err(db)?;
        let version: i64 = tx
            .query_opt("SELECT version FROM hush_schema_version", &[])
            .await
            .map_err(db)?
            .map_or(0, |r| r.get(0));
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            tx.batch_execute(sql).await.map_err(db)?;
            tx.execute("DELETE FROM hush_schema_version", &[])
                .await
                .map_err(db)?;
            tx.execute(
                "INSERT INTO hush_schema_version (version) VALUES ($1)",
                &[&((i + 1) as i64)],
            )
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(db)
    }
}

fn dev(a: &Addr) -> i64 {
    i64::from(a.device)
}

fn ms(v: u64) -> i64 {
    v.min(i64::MAX as u64) as i64
}

impl Store for PgStore {
    fn queue_depth(&self) -> usize {
        self.pool.status().waiting
    }

    async fn device(&self, addr: &Addr) -> Result<DeviceLookup, StoreError> {
        let c = self.client().await?;
        if let Some(r) = c
            .query_opt(
                "SELECT identity_key FROM devices WHERE user_id = $1 AND device_id = $2",
                &[&addr.user, &dev(addr)],
            )
            .await
            .map_err(db)?
        {
            return Ok(DeviceLookup::Known(r.get(0)));
        }
        drop(c);
        Ok(DeviceLookup::Unknown(self.devices(&addr.user).await?))
    }

    async fn devices(&self, user: &str) -> Result<Vec<(u32, Vec<u8>)>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT device_id, identity_key FROM devices WHERE user_id = $1 ORDER BY device_id",
                &[&user],
            )
            .await
            .map_err(db)?;
        Ok(rows
            .iter()
            .map(|r| (r.get::<_, i64>(0) as u32, r.get(1)))
            .collect())
    }

    async fn rekey(&self, addr: &Addr, old_key: &[u8], new_key: &[u8]) -> Result<bool, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db)?;
        let n = tx
            .execute(
                "UPDATE devices SET identity_key = $4 WHERE user_id = $1 AND device_id = $2 AND identity_key = $3",
                &[&addr.user, &dev(addr), &old_key, &new_key],
            )
            .await
            .map_err(db)?;
        if n == 1 {
            for sql in [
                "DELETE FROM signed_prekeys WHERE user_id = $1 AND device_id = $2",
                "DELETE FROM one_time_prekeys WHERE user_id = $1 AND device_id = $2",
            ] {
                tx.execute(sql, &[&addr.user, &dev(addr)])
                    .await
                    .map_err(db)?;
            }
        }
        tx.commit().await.map_err(db)?;
        Ok(n == 1)
    }

    async fn register(
        &self,
        addr: &Addr,
        identity_key: &[u8],
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        let c = self.client().await?;
        let n = c
            .execute(
                "INSERT INTO devices (user_id, device_id, identity_key, registered_ms) VALUES ($1, $2, $3, $4)
                 ON CONFLICT DO NOTHING",
                &[&addr.user, &dev(addr), &identity_key, &ms(now_ms)],
            )
            .await
            .map_err(db)?;
        Ok(n == 1)
    }

    async fn upload_prekeys(
        &self,
        addr: &Addr,
        signed: Option<(StoredPrekey, Vec<u8>)>,
        one_time: Vec<StoredPrekey>,
    ) -> Result<u64, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db)?;
        if let Some((spk, sig)) = signed {
            tx.execute(
                "INSERT INTO signed_prekeys (user_id, device_id, id, key, signature) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (user_id, device_id) DO UPDATE SET id = EXCLUDED.id, key = EXCLUDED.key, signature = EXCLUDED.signature",
                &[&addr.user, &dev(addr), &i64::from(spk.id), &spk.key, &sig],
            )
            .await
            .map_err(db)?;
        }
        if !one_time.is_empty() {
            let ids: Vec<i64> = one_time.iter().map(|k| i64::from(k.id)).collect();
            let keys: Vec<Vec<u8>> = one_time.into_iter().map(|k| k.key).collect();
            tx.execute(
                "INSERT INTO one_time_prekeys (user_id, device_id, id, key)
                 SELECT $1, $2, i, k FROM UNNEST($3::BIGINT[], $4::BYTEA[]) AS t(i, k)
                 ON CONFLICT (user_id, device_id, id) DO UPDATE SET key = EXCLUDED.key",
                &[&addr.user, &dev(addr), &ids, &keys],
            )
            .await
            .map_err(db)?;
        }
        let n: i64 = tx
            .query_one(
                "SELECT COUNT(*) FROM one_time_prekeys WHERE user_id = $1 AND device_id = $2",
                &[&addr.user, &dev(addr)],
            )
            .await
            .map_err(db)?
            .get(0);
        tx.commit().await.map_err(db)?;
        Ok(n as u64)
    }

    async fn take_bundle(&self, addr: &Addr) -> Result<Option<StoredBundle>, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db)?;
        let Some(row) = tx
            .query_opt(
                "SELECT d.identity_key, s.id, s.key, s.signature FROM devices d
                 JOIN signed_prekeys s ON s.user_id = d.user_id AND s.device_id = d.device_id
                 WHERE d.user_id = $1 AND d.device_id = $2",
                &[&addr.user, &dev(addr)],
            )
            .await
            .map_err(db)?
        else {
            return Ok(None);
        };
        // Each key is handed out once: a concurrent fetch skips a key another holds.
        let opk = tx
            .query_opt(
                "DELETE FROM one_time_prekeys WHERE (user_id, device_id, id) = (
                    SELECT user_id, device_id, id FROM one_time_prekeys
                    WHERE user_id = $1 AND device_id = $2 ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
                 RETURNING id, key",
                &[&addr.user, &dev(addr)],
            )
            .await
            .map_err(db)?
            .map(|r| StoredPrekey {
                id: r.get::<_, i64>(0) as u32,
                key: r.get(1),
            });
        tx.commit().await.map_err(db)?;
        Ok(Some(StoredBundle {
            identity_key: row.get(0),
            signed_prekey: StoredPrekey {
                id: row.get::<_, i64>(1) as u32,
                key: row.get(2),
            },
            signature: row.get(3),
            one_time_prekey: opk,
        }))
    }

    async fn prekey_count(&self, addr: &Addr) -> Result<u64, StoreError> {
        let c = self.client().await?;
        let n: i64 = c
            .query_one(
                "SELECT COUNT(*) FROM one_time_prekeys WHERE user_id = $1 AND device_id = $2",
                &[&addr.user, &dev(addr)],
            )
            .await
            .map_err(db)?
            .get(0);
        Ok(n as u64)
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
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db)?;
        let size = ciphertext.len() as i64;
        let expires = ms(now_ms.saturating_add(limits.ttl_ms));
        // Recipients arrive sorted, so concurrent sends lock usage rows in one order.
        for r in &recipients {
            let known = tx
                .query_opt(
                    "SELECT 1 FROM devices WHERE user_id = $1 AND device_id = $2",
                    &[&r.user, &dev(r)],
                )
                .await
                .map_err(db)?;
            if known.is_none() {
                return Err(StoreError::UnknownRecipient(r.clone()));
            }
            let usage = tx
                .query_one(
                    "INSERT INTO mailbox_usage (user_id, device_id, count, bytes) VALUES ($1, $2, 0, 0)
                     ON CONFLICT (user_id, device_id) DO UPDATE SET count = mailbox_usage.count
                     RETURNING count, bytes",
                    &[&r.user, &dev(r)],
                )
                .await
                .map_err(db)?;
            let (count, bytes): (i64, i64) = (usage.get(0), usage.get(1));
            if count as u64 >= limits.max_count || (bytes + size) as u64 > limits.max_bytes {
                return Err(StoreError::MailboxFull(r.clone()));
            }
        }
        let message: i64 = tx
            .query_one(
                "INSERT INTO messages (sender_user, sender_device, message_id, server_ms, expires_ms, ciphertext, refs)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                &[
                    &sender.user,
                    &dev(sender),
                    &message_id,
                    &ms(now_ms),
                    &expires,
                    &ciphertext,
                    &(recipients.len() as i64),
                ],
            )
            .await
            .map_err(db)?
            .get(0);
        let users: Vec<&str> = recipients.iter().map(|r| r.user.as_str()).collect();
        let devices: Vec<i64> = recipients.iter().map(dev).collect();
        tx.execute(
            "INSERT INTO mailbox (user_id, device_id, message, size, expires_ms)
             SELECT u, d, $3, $4, $5 FROM UNNEST($1::TEXT[], $2::BIGINT[]) WITH ORDINALITY AS t(u, d, n) ORDER BY n",
            &[&users, &devices, &message, &size, &expires],
        )
        .await
        .map_err(db)?;
        tx.execute(
            "UPDATE mailbox_usage SET count = count + 1, bytes = bytes + $3
             FROM UNNEST($1::TEXT[], $2::BIGINT[]) AS t(u, d)
             WHERE mailbox_usage.user_id = t.u AND mailbox_usage.device_id = t.d",
            &[&users, &devices, &size],
        )
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    async fn pending(
        &self,
        addr: &Addr,
        after_id: u64,
        limit: u32,
        now_ms: u64,
    ) -> Result<Vec<StoredEnvelope>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT mb.envelope_id, m.sender_user, m.sender_device, m.message_id, m.server_ms, m.ciphertext
                 FROM mailbox mb JOIN messages m ON m.id = mb.message
                 WHERE mb.user_id = $1 AND mb.device_id = $2 AND mb.envelope_id > $3 AND mb.expires_ms > $4
                 ORDER BY mb.envelope_id LIMIT $5",
                &[&addr.user, &dev(addr), &ms(after_id), &ms(now_ms), &i64::from(limit)],
            )
            .await
            .map_err(db)?;
        Ok(rows
            .iter()
            .map(|r| StoredEnvelope {
                envelope_id: r.get::<_, i64>(0) as u64,
                sender: Addr {
                    user: r.get(1),
                    device: r.get::<_, i64>(2) as u32,
                },
                message_id: r.get(3),
                server_ms: r.get::<_, i64>(4) as u64,
                ciphertext: r.get(5),
            })
            .collect())
    }

    async fn ack(
        &self,
        addr: &Addr,
        envelope_ids: Vec<u64>,
        now_ms: u64,
    ) -> Result<Vec<Addr>, StoreError> {
        let ids: Vec<i64> = envelope_ids.iter().map(|&i| ms(i)).collect();
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db)?;
        let gone = tx
            .query(
                "DELETE FROM mailbox WHERE envelope_id = ANY($1) AND user_id = $2 AND device_id = $3
                 RETURNING message, size",
                &[&ids, &addr.user, &dev(addr)],
            )
            .await
            .map_err(db)?;
        if gone.is_empty() {
            tx.commit().await.map_err(db)?;
            return Ok(vec![]);
        }
        let bytes: i64 = gone.iter().map(|r| r.get::<_, i64>(1)).sum();
        tx.execute(
            "UPDATE mailbox_usage SET count = count - $3, bytes = bytes - $4 WHERE user_id = $1 AND device_id = $2",
            &[&addr.user, &dev(addr), &(gone.len() as i64), &bytes],
        )
        .await
        .map_err(db)?;
        let messages: Vec<i64> = gone.iter().map(|r| r.get(0)).collect();
        let senders = tx
            .query(
                "UPDATE messages SET refs = refs - 1 WHERE id = ANY($1)
                 RETURNING id, sender_user, sender_device, message_id, refs",
                &[&messages],
            )
            .await
            .map_err(db)?;
        tx.execute(
            "DELETE FROM messages WHERE id = ANY($1) AND refs <= 0",
            &[&messages],
        )
        .await
        .map_err(db)?;
        let mut out: Vec<Addr> = senders
            .iter()
            .map(|r| Addr {
                user: r.get(1),
                device: r.get::<_, i64>(2) as u32,
            })
            .collect();
        out.sort();
        out.dedup();
        for s in &out {
            lock_receipts(&tx, s).await?;
        }
        for r in &senders {
            tx.execute(
                "INSERT INTO receipts (user_id, device_id, read, recipient_user, recipient_device, message_id, at_ms)
                 VALUES ($1, $2, FALSE, $3, $4, $5, $6)",
                &[
                    &r.get::<_, String>(1),
                    &r.get::<_, i64>(2),
                    &addr.user,
                    &dev(addr),
                    &r.get::<_, Vec<u8>>(3),
                    &ms(now_ms),
                ],
            )
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        Ok(out)
    }

    async fn read(
        &self,
        reader: &Addr,
        sender: &Addr,
        message_ids: Vec<Vec<u8>>,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db)?;
        if tx
            .query_opt(
                "SELECT 1 FROM devices WHERE user_id = $1 AND device_id = $2",
                &[&sender.user, &dev(sender)],
            )
            .await
            .map_err(db)?
            .is_none()
        {
            return Err(StoreError::UnknownRecipient(sender.clone()));
        }
        lock_receipts(&tx, sender).await?;
        tx.execute(
            "INSERT INTO receipts (user_id, device_id, read, recipient_user, recipient_device, message_id, at_ms)
             SELECT $1, $2, TRUE, $3, $4, m, $6 FROM UNNEST($5::BYTEA[]) WITH ORDINALITY AS t(m, n) ORDER BY n",
            &[&sender.user, &dev(sender), &reader.user, &dev(reader), &message_ids, &ms(now_ms)],
        )
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    async fn receipts(
        &self,
        addr: &Addr,
        after_id: u64,
        limit: u32,
    ) -> Result<Vec<StoredReceipt>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT receipt_id, read, recipient_user, recipient_device, message_id, at_ms FROM receipts
                 WHERE user_id = $1 AND device_id = $2 AND receipt_id > $3 ORDER BY receipt_id LIMIT $4",
                &[&addr.user, &dev(addr), &ms(after_id), &i64::from(limit)],
            )
            .await
            .map_err(db)?;
        Ok(rows
            .iter()
            .map(|r| StoredReceipt {
                receipt_id: r.get::<_, i64>(0) as u64,
                read: r.get(1),
                recipient: Addr {
                    user: r.get(2),
                    device: r.get::<_, i64>(3) as u32,
                },
                message_id: r.get(4),
                at_ms: r.get::<_, i64>(5) as u64,
            })
            .collect())
    }

    async fn ack_receipts(&self, addr: &Addr, receipt_ids: Vec<u64>) -> Result<(), StoreError> {
        let ids: Vec<i64> = receipt_ids.iter().map(|&i| ms(i)).collect();
        let c = self.client().await?;
        c.execute(
            "DELETE FROM receipts WHERE receipt_id = ANY($1) AND user_id = $2 AND device_id = $3",
            &[&ids, &addr.user, &dev(addr)],
        )
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn touch(&self, user: &str, now_ms: u64) -> Result<(), StoreError> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO presence (user_id, last_seen_ms, hidden) VALUES ($1, $2, FALSE)
             ON CONFLICT (user_id) DO UPDATE SET last_seen_ms = GREATEST(presence.last_seen_ms, EXCLUDED.last_seen_ms)",
            &[&user, &ms(now_ms)],
        )
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn presence(&self, user: &str) -> Result<Option<(u64, bool)>, StoreError> {
        let c = self.client().await?;
        Ok(c.query_opt(
            "SELECT last_seen_ms, hidden FROM presence WHERE user_id = $1",
            &[&user],
        )
        .await
        .map_err(db)?
        .map(|r| (r.get::<_, i64>(0) as u64, r.get(1))))
    }

    async fn set_hidden(&self, user: &str, hidden: bool) -> Result<(), StoreError> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO presence (user_id, last_seen_ms, hidden) VALUES ($1, 0, $2)
             ON CONFLICT (user_id) DO UPDATE SET hidden = EXCLUDED.hidden",
            &[&user, &hidden],
        )
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn expire(&self, now_ms: u64) -> Result<u64, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db)?;
        let gone = tx
            .query(
                "DELETE FROM mailbox WHERE expires_ms <= $1 RETURNING user_id, device_id, size",
                &[&ms(now_ms)],
            )
            .await
            .map_err(db)?;
        for r in &gone {
            tx.execute(
                "UPDATE mailbox_usage SET count = count - 1, bytes = bytes - $3 WHERE user_id = $1 AND device_id = $2",
                &[&r.get::<_, String>(0), &r.get::<_, i64>(1), &r.get::<_, i64>(2)],
            )
            .await
            .map_err(db)?;
        }
        tx.execute(
            "DELETE FROM messages WHERE expires_ms <= $1",
            &[&ms(now_ms)],
        )
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(gone.len() as u64)
    }

    async fn put_blob(&self, id: &str, size: u64, expires_ms: u64) -> Result<(), StoreError> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO blobs (id, size, expires_ms) VALUES ($1, $2, $3)
             ON CONFLICT (id) DO UPDATE SET expires_ms = GREATEST(blobs.expires_ms, EXCLUDED.expires_ms)",
            &[&id, &ms(size), &ms(expires_ms)],
        )
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn blob(&self, id: &str, now_ms: u64) -> Result<Option<u64>, StoreError> {
        let c = self.client().await?;
        Ok(c.query_opt(
            "SELECT size FROM blobs WHERE id = $1 AND expires_ms > $2",
            &[&id, &ms(now_ms)],
        )
        .await
        .map_err(db)?
        .map(|r| r.get::<_, i64>(0) as u64))
    }

    async fn expire_blobs(&self, now_ms: u64) -> Result<Vec<String>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "DELETE FROM blobs WHERE expires_ms <= $1 RETURNING id",
                &[&ms(now_ms)],
            )
            .await
            .map_err(db)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }
}

/// Serialises receipt inserts for one owner until commit, so its receipt ids commit in
/// order.
async fn lock_receipts(
    tx: &deadpool_postgres::Transaction<'_>,
    owner: &Addr,
) -> Result<(), StoreError> {
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1 || '/' || $2::BIGINT::TEXT, 7800))",
        &[&owner.user, &dev(owner)],
    )
    .await
    .map_err(db)?;
    Ok(())
}
