//! The PostgreSQL store: the system of record when several relay nodes share one database.
//! Same behaviour as [`SqliteStore`](crate::SqliteStore): nothing is answered before its
//! transaction has committed (synchronously, PostgreSQL's default).
//!
//! The hot path (sends, acknowledgements, receipt acknowledgements, presence) is committed in
//! batches, many connections' operations in one transaction (`batch.rs`); what a batch commits
//! is pushed to this node's connections (see [`Store::deliver_on_commit`]), and NATS wakes the
//! other nodes. The rest runs one transaction per operation.
//!
//! Ordering: envelope ids come from a sequence, drawn under a per-recipient advisory lock
//! held until commit, so each device's envelopes commit in id order and a connection's cursor
//! never skips one. Receipts get the same guarantee from an advisory lock on their owner.
//! Mailbox usage (count, bytes, each sending user's share) and receipt-queue lengths are kept
//! in rows written under those locks, so no send counts a mailbox.
//! One-time prekeys are taken with `FOR UPDATE SKIP LOCKED`: concurrent fetches through
//! different nodes hand out each key once.

mod batch;
mod shards;

use std::sync::{Arc, OnceLock};

pub use self::batch::{BATCH_TIMEOUT, MAX_BATCH_BYTES, MAX_BATCH_LOCKS, MAX_BATCH_OPS};
pub use self::shards::{FORWARD_WAIT, MAX_SHARDS, Moved, ShardedPgStore, shard_of};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

use tokio::sync::{mpsc, oneshot};

pub(crate) use self::batch::Unplaced;
use self::batch::{Op, lock_key};
use crate::store::{
    Addr, DAY_MS, DeliveryHook, DeviceLookup, MailboxLimits, Outgoing, PrekeyCaps, PrekeyStock,
    PrekeyUpload, ReceiptLimits, Refusals, Store, StoreError, StoredBundle, StoredEnvelope,
    StoredKemPrekey, StoredPrekey, StoredReceipt, StoredReport,
};

/// Deletes every prekey of device ($1, $2).
const DROP_PREKEYS: [&str; 4] = [
    "DELETE FROM signed_prekeys WHERE user_id = $1 AND device_id = $2",
    "DELETE FROM one_time_prekeys WHERE user_id = $1 AND device_id = $2",
    "DELETE FROM kem_prekeys WHERE user_id = $1 AND device_id = $2",
    "DELETE FROM last_resort_kem_prekeys WHERE user_id = $1 AND device_id = $2",
];

/// A device's prekey stock, from ($1, $2).
const PREKEY_STOCK: &str = "SELECT
    (SELECT COUNT(*) FROM one_time_prekeys WHERE user_id = $1 AND device_id = $2),
    (SELECT COUNT(*) FROM kem_prekeys WHERE user_id = $1 AND device_id = $2),
    EXISTS (SELECT 1 FROM last_resort_kem_prekeys WHERE user_id = $1 AND device_id = $2)";

fn stock(row: &tokio_postgres::Row) -> PrekeyStock {
    PrekeyStock {
        one_time: row.get::<_, i64>(0) as u64,
        kem_one_time: row.get::<_, i64>(1) as u64,
        kem_last_resort: row.get(2),
    }
}

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
     CREATE TABLE receipts (
        receipt_id BIGSERIAL PRIMARY KEY, user_id TEXT NOT NULL, device_id BIGINT NOT NULL,
        read BOOLEAN NOT NULL, recipient_user TEXT NOT NULL, recipient_device BIGINT NOT NULL,
        message_id BYTEA NOT NULL, at_ms BIGINT NOT NULL);
     CREATE INDEX receipts_by_device ON receipts (user_id, device_id, receipt_id);
     CREATE TABLE presence (user_id TEXT PRIMARY KEY, last_seen_ms BIGINT NOT NULL, hidden BOOLEAN NOT NULL);
     CREATE TABLE blobs (id TEXT PRIMARY KEY, size BIGINT NOT NULL, expires_ms BIGINT NOT NULL);
     CREATE INDEX blobs_by_expiry ON blobs (expires_ms);",
    // 2: enqueue and acknowledge in one round trip each (the relay's hot path).
    "CREATE FUNCTION hush_enqueue(s_user TEXT, s_dev BIGINT, mid BYTEA, now_ms BIGINT, exp_ms BIGINT,
        ct BYTEA, r_users TEXT[], r_devs BIGINT[], max_count BIGINT, max_bytes BIGINT)
     RETURNS INT LANGUAGE plpgsql AS $$
     DECLARE i INT; c BIGINT; b BIGINT; msg BIGINT;
     BEGIN
       FOR i IN 1 .. coalesce(array_length(r_users, 1), 0) LOOP
         IF NOT EXISTS (SELECT 1 FROM devices WHERE user_id = r_users[i] AND device_id = r_devs[i]) THEN
           RETURN -i;
         END IF;
         -- Held until commit: this recipient's envelope ids commit in order.
         PERFORM pg_advisory_xact_lock(hashtextextended('mailbox/' || r_users[i] || '/' || r_devs[i]::TEXT, 7800));
         SELECT COUNT(*), COALESCE(SUM(size), 0) INTO c, b FROM mailbox
           WHERE user_id = r_users[i] AND device_id = r_devs[i];
         IF c >= max_count OR b + length(ct) > max_bytes THEN
           RETURN 1000000 + i;
         END IF;
       END LOOP;
       INSERT INTO messages (sender_user, sender_device, message_id, server_ms, expires_ms, ciphertext, refs)
         VALUES (s_user, s_dev, mid, now_ms, exp_ms, ct, array_length(r_users, 1)) RETURNING id INTO msg;
       INSERT INTO mailbox (user_id, device_id, message, size, expires_ms)
         SELECT u, d, msg, length(ct), exp_ms FROM UNNEST(r_users, r_devs) WITH ORDINALITY AS t(u, d, n) ORDER BY n;
       RETURN 0;
     END $$;
     CREATE FUNCTION hush_ack(r_user TEXT, r_dev BIGINT, ids BIGINT[], now_ms BIGINT)
     RETURNS TABLE (s_user TEXT, s_dev BIGINT) LANGUAGE plpgsql AS $$
     DECLARE m RECORD;
     BEGIN
       CREATE TEMP TABLE IF NOT EXISTS hush_acked (message BIGINT) ON COMMIT DELETE ROWS;
       WITH gone AS (DELETE FROM mailbox WHERE envelope_id = ANY(ids) AND user_id = r_user AND device_id = r_dev
                     RETURNING message)
       INSERT INTO hush_acked SELECT message FROM gone;
       FOR m IN SELECT DISTINCT x.sender_user, x.sender_device FROM messages x JOIN hush_acked a ON a.message = x.id
                ORDER BY 1, 2 LOOP
         PERFORM pg_advisory_xact_lock(hashtextextended('receipts/' || m.sender_user || '/' || m.sender_device::TEXT, 7800));
       END LOOP;
       INSERT INTO receipts (user_id, device_id, read, recipient_user, recipient_device, message_id, at_ms)
         SELECT x.sender_user, x.sender_device, FALSE, r_user, r_dev, x.message_id, now_ms
         FROM messages x JOIN hush_acked a ON a.message = x.id ORDER BY x.id;
       RETURN QUERY WITH upd AS (
           UPDATE messages x SET refs = x.refs - 1 FROM hush_acked a WHERE a.message = x.id
           RETURNING x.id, x.sender_user, x.sender_device, x.refs)
         SELECT DISTINCT upd.sender_user, upd.sender_device FROM upd;
       DELETE FROM messages x USING hush_acked a WHERE a.message = x.id AND x.refs <= 0;
     END $$;",
    // 3: upload tokens live in the database, so any node accepts an upload.
    "CREATE TABLE upload_tokens (token_hash BYTEA PRIMARY KEY, user_id TEXT NOT NULL,
        device_id BIGINT NOT NULL, expires_ms BIGINT NOT NULL);",
    // 4: abuse resistance (as SQLite's migration 6): receipts expire by time and a device's
    // queue has a cap; `revoked_keys`: identity keys of removed devices.
    "CREATE TABLE revoked_keys (
        user_id TEXT NOT NULL, identity_key BYTEA NOT NULL, removed_ms BIGINT NOT NULL,
        PRIMARY KEY (user_id, identity_key));
     DROP FUNCTION hush_ack(TEXT, BIGINT, BIGINT[], BIGINT);
     CREATE FUNCTION hush_ack(r_user TEXT, r_dev BIGINT, ids BIGINT[], now_ms BIGINT,
        max_queued BIGINT)
     RETURNS TABLE (s_user TEXT, s_dev BIGINT) LANGUAGE plpgsql AS $$
     DECLARE m RECORD;
     BEGIN
       CREATE TEMP TABLE IF NOT EXISTS hush_acked (message BIGINT) ON COMMIT DELETE ROWS;
       WITH gone AS (DELETE FROM mailbox WHERE envelope_id = ANY(ids) AND user_id = r_user AND device_id = r_dev
                     RETURNING message)
       INSERT INTO hush_acked SELECT message FROM gone;
       FOR m IN SELECT DISTINCT x.sender_user, x.sender_device FROM messages x JOIN hush_acked a ON a.message = x.id
                ORDER BY 1, 2 LOOP
         PERFORM pg_advisory_xact_lock(hashtextextended('receipts/' || m.sender_user || '/' || m.sender_device::TEXT, 7800));
       END LOOP;
       INSERT INTO receipts (user_id, device_id, read, recipient_user, recipient_device, message_id, at_ms)
         SELECT y.sender_user, y.sender_device, FALSE, r_user, r_dev, y.message_id, now_ms
         FROM (SELECT x.id, x.sender_user, x.sender_device, x.message_id,
                      row_number() OVER (PARTITION BY x.sender_user, x.sender_device ORDER BY x.id) AS n
               FROM messages x JOIN hush_acked a ON a.message = x.id) y
         JOIN (SELECT s.sender_user, s.sender_device,
                      (SELECT COUNT(*) FROM receipts r WHERE r.user_id = s.sender_user
                         AND r.device_id = s.sender_device) AS queued
               FROM (SELECT DISTINCT x.sender_user, x.sender_device FROM messages x
                     JOIN hush_acked a ON a.message = x.id) s) q
           ON q.sender_user = y.sender_user AND q.sender_device = y.sender_device
         WHERE y.n + q.queued <= max_queued
         ORDER BY y.id;
       RETURN QUERY WITH upd AS (
           UPDATE messages x SET refs = x.refs - 1 FROM hush_acked a WHERE a.message = x.id
           RETURNING x.id, x.sender_user, x.sender_device, x.refs)
         SELECT DISTINCT upd.sender_user, upd.sender_device FROM upd;
       DELETE FROM messages x USING hush_acked a WHERE a.message = x.id AND x.refs <= 0;
     END $$;",
    // 5: a sending user's share of each mailbox (`s_max_count`, `s_max_bytes`; 2000000 + i
    // when recipient i's share for this sender is full).
    "DROP FUNCTION hush_enqueue(TEXT, BIGINT, BYTEA, BIGINT, BIGINT, BYTEA, TEXT[], BIGINT[], BIGINT, BIGINT);
     CREATE FUNCTION hush_enqueue(s_user TEXT, s_dev BIGINT, mid BYTEA, now_ms BIGINT, exp_ms BIGINT,
        ct BYTEA, r_users TEXT[], r_devs BIGINT[], max_count BIGINT, max_bytes BIGINT,
        s_max_count BIGINT, s_max_bytes BIGINT)
     RETURNS INT LANGUAGE plpgsql AS $$
     DECLARE i INT; c BIGINT; b BIGINT; sc BIGINT; sb BIGINT; msg BIGINT;
     BEGIN
       FOR i IN 1 .. coalesce(array_length(r_users, 1), 0) LOOP
         IF NOT EXISTS (SELECT 1 FROM devices WHERE user_id = r_users[i] AND device_id = r_devs[i]) THEN
           RETURN -i;
         END IF;
         -- Held until commit: this recipient's envelope ids commit in order.
         PERFORM pg_advisory_xact_lock(hashtextextended('mailbox/' || r_users[i] || '/' || r_devs[i]::TEXT, 7800));
         SELECT COUNT(*), COALESCE(SUM(mb.size), 0),
                COUNT(*) FILTER (WHERE m.sender_user = s_user),
                COALESCE(SUM(mb.size) FILTER (WHERE m.sender_user = s_user), 0)
           INTO c, b, sc, sb FROM mailbox mb JOIN messages m ON m.id = mb.message
           WHERE mb.user_id = r_users[i] AND mb.device_id = r_devs[i];
         IF c >= max_count OR b + length(ct) > max_bytes THEN
           RETURN 1000000 + i;
         END IF;
         IF sc >= s_max_count OR sb + length(ct) > s_max_bytes THEN
           RETURN 2000000 + i;
         END IF;
       END LOOP;
       INSERT INTO messages (sender_user, sender_device, message_id, server_ms, expires_ms, ciphertext, refs)
         VALUES (s_user, s_dev, mid, now_ms, exp_ms, ct, array_length(r_users, 1)) RETURNING id INTO msg;
       INSERT INTO mailbox (user_id, device_id, message, size, expires_ms)
         SELECT u, d, msg, length(ct), exp_ms FROM UNNEST(r_users, r_devs) WITH ORDINALITY AS t(u, d, n) ORDER BY n;
       RETURN 0;
     END $$;",
    // 6: who may see whose presence (as SQLite's migration 7).
    "CREATE TABLE presence_grants (owner TEXT NOT NULL, viewer TEXT NOT NULL,
        until_ms BIGINT NOT NULL, PRIMARY KEY (owner, viewer));
     CREATE INDEX presence_grants_by_expiry ON presence_grants (until_ms);",
    // 7: blob bytes per device per day (as SQLite's migration 8).
    "CREATE TABLE blob_usage (user_id TEXT NOT NULL, device_id BIGINT NOT NULL,
        day BIGINT NOT NULL, bytes BIGINT NOT NULL, PRIMARY KEY (user_id, device_id, day));",
    // 8: a full mailbox refuses its recipient alone. The answer is an array: `{-i}` when
    // recipient i is not registered (nothing stored), else one code per refused recipient
    // (1000000 + i: its mailbox is full; 2000000 + i: the sender's share of it), the
    // envelope stored for every other recipient (for none if all are refused).
    "DROP FUNCTION hush_enqueue(TEXT, BIGINT, BYTEA, BIGINT, BIGINT, BYTEA, TEXT[], BIGINT[],
        BIGINT, BIGINT, BIGINT, BIGINT);
     CREATE FUNCTION hush_enqueue(s_user TEXT, s_dev BIGINT, mid BYTEA, now_ms BIGINT, exp_ms BIGINT,
        ct BYTEA, r_users TEXT[], r_devs BIGINT[], max_count BIGINT, max_bytes BIGINT,
        s_max_count BIGINT, s_max_bytes BIGINT)
     RETURNS INT[] LANGUAGE plpgsql AS $$
     DECLARE i INT; c BIGINT; b BIGINT; sc BIGINT; sb BIGINT; msg BIGINT;
       refused INT[] := '{}'; k_users TEXT[] := '{}'; k_devs BIGINT[] := '{}';
     BEGIN
       FOR i IN 1 .. coalesce(array_length(r_users, 1), 0) LOOP
         IF NOT EXISTS (SELECT 1 FROM devices WHERE user_id = r_users[i] AND device_id = r_devs[i]) THEN
           RETURN ARRAY[-i];
         END IF;
         -- Held until commit: this recipient's envelope ids commit in order.
         PERFORM pg_advisory_xact_lock(hashtextextended('mailbox/' || r_users[i] || '/' || r_devs[i]::TEXT, 7800));
         SELECT COUNT(*), COALESCE(SUM(mb.size), 0),
                COUNT(*) FILTER (WHERE m.sender_user = s_user),
                COALESCE(SUM(mb.size) FILTER (WHERE m.sender_user = s_user), 0)
           INTO c, b, sc, sb FROM mailbox mb JOIN messages m ON m.id = mb.message
           WHERE mb.user_id = r_users[i] AND mb.device_id = r_devs[i];
         IF c >= max_count OR b + length(ct) > max_bytes THEN
           refused := refused || (1000000 + i);
         ELSIF sc >= s_max_count OR sb + length(ct) > s_max_bytes THEN
           refused := refused || (2000000 + i);
         ELSE
           k_users := k_users || r_users[i];
           k_devs := k_devs || r_devs[i];
         END IF;
       END LOOP;
       IF coalesce(array_length(k_users, 1), 0) = 0 THEN
         RETURN refused;
       END IF;
       INSERT INTO messages (sender_user, sender_device, message_id, server_ms, expires_ms, ciphertext, refs)
         VALUES (s_user, s_dev, mid, now_ms, exp_ms, ct, array_length(k_users, 1)) RETURNING id INTO msg;
       INSERT INTO mailbox (user_id, device_id, message, size, expires_ms)
         SELECT u, d, msg, length(ct), exp_ms FROM UNNEST(k_users, k_devs) WITH ORDINALITY AS t(u, d, n) ORDER BY n;
       RETURN refused;
     END $$;",
    // 9: post-quantum prekeys (SPEC §5.3): signed one-time KEM prekeys, handed out once
    // each, and one last-resort KEM prekey per device; whether the signed prekey is
    // post-quantum (only then do bundles carry a KEM prekey).
    "ALTER TABLE signed_prekeys ADD COLUMN post_quantum BOOLEAN NOT NULL DEFAULT FALSE;
     CREATE TABLE kem_prekeys (user_id TEXT NOT NULL, device_id BIGINT NOT NULL,
        id BIGINT NOT NULL, key BYTEA NOT NULL, signature BYTEA NOT NULL,
        PRIMARY KEY (user_id, device_id, id));
     CREATE TABLE last_resort_kem_prekeys (user_id TEXT NOT NULL, device_id BIGINT NOT NULL,
        id BIGINT NOT NULL, key BYTEA NOT NULL, signature BYTEA NOT NULL,
        PRIMARY KEY (user_id, device_id));",
    // 10: message franking (SPEC §17, as SQLite's migration 10): the sender's commitment
    // kept with the message (hush_enqueue takes it last), the relay's franking key, and
    // verified abuse reports.
    "ALTER TABLE messages ADD COLUMN franking BYTEA;
     CREATE TABLE relay_keys (name TEXT PRIMARY KEY, key BYTEA NOT NULL);
     CREATE TABLE reports (id BIGSERIAL PRIMARY KEY,
        reporter_user TEXT NOT NULL, reporter_device BIGINT NOT NULL,
        sender_user TEXT NOT NULL, sender_device BIGINT NOT NULL, server_ms BIGINT NOT NULL,
        content BYTEA NOT NULL, reason TEXT NOT NULL, consent TEXT NOT NULL, tag BYTEA NOT NULL,
        received_ms BIGINT NOT NULL, UNIQUE (reporter_user, reporter_device, tag));
     CREATE INDEX reports_by_reporter ON reports (reporter_user, received_ms);
     DROP FUNCTION hush_enqueue(TEXT, BIGINT, BYTEA, BIGINT, BIGINT, BYTEA, TEXT[], BIGINT[],
        BIGINT, BIGINT, BIGINT, BIGINT);
     CREATE FUNCTION hush_enqueue(s_user TEXT, s_dev BIGINT, mid BYTEA, now_ms BIGINT, exp_ms BIGINT,
        ct BYTEA, r_users TEXT[], r_devs BIGINT[], max_count BIGINT, max_bytes BIGINT,
        s_max_count BIGINT, s_max_bytes BIGINT, fr BYTEA)
     RETURNS INT[] LANGUAGE plpgsql AS $$
     DECLARE i INT; c BIGINT; b BIGINT; sc BIGINT; sb BIGINT; msg BIGINT;
       refused INT[] := '{}'; k_users TEXT[] := '{}'; k_devs BIGINT[] := '{}';
     BEGIN
       FOR i IN 1 .. coalesce(array_length(r_users, 1), 0) LOOP
         IF NOT EXISTS (SELECT 1 FROM devices WHERE user_id = r_users[i] AND device_id = r_devs[i]) THEN
           RETURN ARRAY[-i];
         END IF;
         -- Held until commit: this recipient's envelope ids commit in order.
         PERFORM pg_advisory_xact_lock(hashtextextended('mailbox/' || r_users[i] || '/' || r_devs[i]::TEXT, 7800));
         SELECT COUNT(*), COALESCE(SUM(mb.size), 0),
                COUNT(*) FILTER (WHERE m.sender_user = s_user),
                COALESCE(SUM(mb.size) FILTER (WHERE m.sender_user = s_user), 0)
           INTO c, b, sc, sb FROM mailbox mb JOIN messages m ON m.id = mb.message
           WHERE mb.user_id = r_users[i] AND mb.device_id = r_devs[i];
         IF c >= max_count OR b + length(ct) > max_bytes THEN
           refused := refused || (1000000 + i);
         ELSIF sc >= s_max_count OR sb + length(ct) > s_max_bytes THEN
           refused := refused || (2000000 + i);
         ELSE
           k_users := k_users || r_users[i];
           k_devs := k_devs || r_devs[i];
         END IF;
       END LOOP;
       IF coalesce(array_length(k_users, 1), 0) = 0 THEN
         RETURN refused;
       END IF;
       INSERT INTO messages (sender_user, sender_device, message_id, server_ms, expires_ms, ciphertext, refs, franking)
         VALUES (s_user, s_dev, mid, now_ms, exp_ms, ct, array_length(k_users, 1), fr) RETURNING id INTO msg;
       INSERT INTO mailbox (user_id, device_id, message, size, expires_ms)
         SELECT u, d, msg, length(ct), exp_ms FROM UNNEST(k_users, k_devs) WITH ORDINALITY AS t(u, d, n) ORDER BY n;
       RETURN refused;
     END $$;",
    // 11: batched hot path (src/store/pg/batch.rs). Mailbox usage, each sending user's share
    // of a mailbox, and receipt-queue lengths live in rows (written under the advisory locks
    // `hush_lock` takes), so no send counts a mailbox; a message for one recipient lives in
    // its mailbox row; the per-operation functions go (a node of an older version stops
    // rather than miscount: upgrading is stopping every node, then starting the new ones).
    "CREATE TABLE mailbox_usage (user_id TEXT NOT NULL, device_id BIGINT NOT NULL,
        count BIGINT NOT NULL, bytes BIGINT NOT NULL, last_id BIGINT NOT NULL,
        PRIMARY KEY (user_id, device_id));
     INSERT INTO mailbox_usage SELECT user_id, device_id, COUNT(*), SUM(size), MAX(envelope_id)
        FROM mailbox GROUP BY 1, 2;
     CREATE TABLE mailbox_share (user_id TEXT NOT NULL, device_id BIGINT NOT NULL,
        sender_user TEXT NOT NULL, count BIGINT NOT NULL, bytes BIGINT NOT NULL,
        PRIMARY KEY (user_id, device_id, sender_user));
     INSERT INTO mailbox_share SELECT mb.user_id, mb.device_id, m.sender_user, COUNT(*), SUM(mb.size)
        FROM mailbox mb JOIN messages m ON m.id = mb.message GROUP BY 1, 2, 3;
     CREATE TABLE receipt_queue (user_id TEXT NOT NULL, device_id BIGINT NOT NULL,
        count BIGINT NOT NULL, last_id BIGINT NOT NULL, PRIMARY KEY (user_id, device_id));
     INSERT INTO receipt_queue SELECT user_id, device_id, COUNT(*), MAX(receipt_id)
        FROM receipts GROUP BY 1, 2;
     ALTER TABLE mailbox DROP CONSTRAINT mailbox_message_fkey;
     ALTER TABLE mailbox ALTER COLUMN message DROP NOT NULL;
     ALTER TABLE mailbox ADD COLUMN sender_user TEXT, ADD COLUMN sender_device BIGINT,
        ADD COLUMN message_id BYTEA, ADD COLUMN server_ms BIGINT, ADD COLUMN ciphertext BYTEA,
        ADD COLUMN franking BYTEA;
     DROP INDEX mailbox_by_message;
     DROP FUNCTION hush_enqueue(TEXT, BIGINT, BYTEA, BIGINT, BIGINT, BYTEA, TEXT[], BIGINT[],
        BIGINT, BIGINT, BIGINT, BIGINT, BYTEA);
     DROP FUNCTION hush_ack(TEXT, BIGINT, BIGINT[], BIGINT, BIGINT);
     CREATE FUNCTION hush_lock(keys BIGINT[]) RETURNS VOID LANGUAGE plpgsql AS $$
     DECLARE k BIGINT;
     BEGIN
       FOREACH k IN ARRAY keys LOOP
         PERFORM pg_advisory_xact_lock(k);
       END LOOP;
     END $$;",
    // 12: sharding: the shard of a user, as `shard_of` computes it; which shard this
    // database is, once it is one.
    "CREATE FUNCTION hush_shard(u TEXT, shards INT) RETURNS INT
     LANGUAGE plpgsql IMMUTABLE STRICT AS $$
     DECLARE h BYTEA := sha256(convert_to('hush shard v1' || u, 'UTF8'));
       k NUMERIC := 0; b BIGINT := -1; j BIGINT := 0; i INT;
     BEGIN
       FOR i IN 0 .. 7 LOOP
         k := k * 256 + get_byte(h, i);
       END LOOP;
       WHILE j < shards LOOP
         b := j;
         k := mod(k * 2862933555777941757 + 1, 18446744073709551616);
         j := div((b + 1) * 2147483648, div(k, 8589934592) + 1);
       END LOOP;
       RETURN greatest(b, 0);
     END $$;
     CREATE TABLE hush_shard_index (shard INT NOT NULL, shards INT NOT NULL);",
];

fn kem_prekey(r: &tokio_postgres::Row) -> StoredKemPrekey {
    StoredKemPrekey {
        id: r.get::<_, i64>(0) as u32,
        key: r.get(1),
        signature: r.get(2),
    }
}

/// Key of the advisory lock that serialises migrations across nodes starting together.
const MIGRATION_LOCK: i64 = 0x6875_7368_0001;

/// How a node's operations are spread over its batches (two in flight per node).
///
/// Measured (docs/BENCHMARKS.md): by mailbox is the faster on one node, where a mailbox's
/// sends and acknowledgements meet in one batch; shared is the faster when every envelope
/// crosses nodes (each node's batches then hold only sends or only acknowledgements, and
/// smaller batches only add transactions). `hush relay` routes by mailbox without NATS and
/// shares with it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Routing {
    /// Each batcher has its own queue, and an operation goes to the queue of the first
    /// mailbox it writes (a send's first recipient, an acknowledging device, the owner of a
    /// receipt queue): two batches in flight mostly lock different mailboxes and commit side
    /// by side instead of one waiting for the other's locks.
    #[default]
    ByMailbox,
    /// One queue: a free batcher takes whatever has queued.
    Shared,
}

/// The PostgreSQL store, with a connection pool and its batchers.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    /// The batches' queues: one per batcher ([`Routing::ByMailbox`], an operation goes to the
    /// queue of the first mailbox it writes), or one that every batcher takes from.
    ops: Arc<[mpsc::Sender<Op>]>,
    hook: Arc<OnceLock<DeliveryHook>>,
}

/// How long a connection may take to open, wait for a free pool slot, or leave data
/// unacknowledged before the operation fails with [`StoreError::Unavailable`] or a database
/// error (PostgreSQL down, or a network partition).
pub const NETWORK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Operations waiting for a batch, at most.
const QUEUE: usize = 8192;

/// A driver's error as a [`StoreError`]: [`StoreError::Unavailable`] when the server is
/// gone or going (the connection closed or failed, or the server shutting down or starting
/// up), so the caller is told to retry; [`StoreError::Database`] otherwise.
fn db(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    let gone = (&e as &(dyn std::error::Error + 'static))
        .downcast_ref::<tokio_postgres::Error>()
        .is_some_and(|pg| {
            use tokio_postgres::error::SqlState;
            match pg.code() {
                Some(code) => {
                    code.code().starts_with("08")
                        || [
                            SqlState::ADMIN_SHUTDOWN,
                            SqlState::CRASH_SHUTDOWN,
                            SqlState::CANNOT_CONNECT_NOW,
                        ]
                        .contains(code)
                }
                // No SQLSTATE: the connection itself failed (closed, or an I/O error).
                None => {
                    pg.is_closed()
                        || std::error::Error::source(pg)
                            .is_some_and(|s| s.downcast_ref::<std::io::Error>().is_some())
                }
            }
        });
    if gone {
        StoreError::Unavailable(Arc::new(e))
    } else {
        StoreError::database(e)
    }
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
    ///
    /// Operations are routed to batches by mailbox ([`Routing::ByMailbox`]); see
    /// [`PgStore::connect_with`].
    pub async fn connect(
        url: &str,
        schema: Option<&str>,
        max_connections: usize,
    ) -> Result<Self, StoreError> {
        Self::connect_with(url, schema, max_connections, Routing::ByMailbox).await
    }

    /// [`PgStore::connect`], with the batches' [`Routing`].
    pub async fn connect_with(
        url: &str,
        schema: Option<&str>,
        max_connections: usize,
        routing: Routing,
    ) -> Result<Self, StoreError> {
        let mut config: tokio_postgres::Config = url.parse().map_err(db)?;
        // A database that stops answering fails requests within seconds instead of holding
        // them (a partition keeps a TCP connection open for minutes otherwise), unless the
        // connection string says otherwise.
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(NETWORK_TIMEOUT);
        }
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(NETWORK_TIMEOUT);
        }
        config.keepalives_idle(NETWORK_TIMEOUT);
        if let Some(s) = schema {
            if !valid_schema(s) {
                return Err(StoreError::InvalidSchemaName);
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
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(NETWORK_TIMEOUT))
            .create_timeout(Some(NETWORK_TIMEOUT))
            .recycle_timeout(Some(NETWORK_TIMEOUT))
            .build()
            .map_err(db)?;
        // A small pool keeps room for the reads beside the batches.
        let batchers = if max_connections >= 4 {
            batch::BATCHERS
        } else {
            1
        };
        let queues = match routing {
            Routing::ByMailbox => batchers,
            Routing::Shared => 1,
        };
        let (ops, queued): (Vec<_>, Vec<_>) = (0..queues).map(|_| mpsc::channel(QUEUE)).unzip();
        let hook = Arc::new(OnceLock::new());
        let store = Self {
            pool: pool.clone(),
            ops: ops.into(),
            hook: hook.clone(),
        };
        store.migrate().await?;
        for rx in queued {
            let batcher = Arc::new(batch::Batcher {
                pool: pool.clone(),
                ops: tokio::sync::Mutex::new(batch::Waiting { rx, held: None }),
                hook: hook.clone(),
            });
            for _ in 0..batchers / queues {
                let batcher = batcher.clone();
                // A batcher that panicked (its callers got `Closed`) is started again.
                tokio::spawn(async move {
                    loop {
                        match tokio::spawn(batch::run(batcher.clone())).await {
                            Err(e) if e.is_panic() => {
                                tracing::error!("a PostgreSQL batcher panicked; restarting it");
                            }
                            _ => return,
                        }
                    }
                });
            }
        }
        Ok(store)
    }

    /// Drops `schema` and everything in it (for tests).
    pub async fn drop_schema(url: &str, schema: &str) -> Result<(), StoreError> {
        if !valid_schema(schema) {
            return Err(StoreError::InvalidSchemaName);
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
        tx.execute(
            &tx.prepare_cached("SELECT pg_advisory_xact_lock($1)")
                .await
                .map_err(db)?,
            &[&MIGRATION_LOCK],
        )
        .await
        .map_err(db)?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS hush_schema_version (version BIGINT NOT NULL)",
        )
        .await
        .map_err(db)?;
        let version: i64 = tx
            .query_opt(
                &tx.prepare_cached("SELECT version FROM hush_schema_version")
                    .await
                    .map_err(db)?,
                &[],
            )
            .await
            .map_err(db)?
            .map_or(0, |r| r.get(0));
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            tx.batch_execute(sql).await.map_err(db)?;
            tx.execute(
                &tx.prepare_cached("DELETE FROM hush_schema_version")
                    .await
                    .map_err(db)?,
                &[],
            )
            .await
            .map_err(db)?;
            tx.execute(
                &tx.prepare_cached("INSERT INTO hush_schema_version (version) VALUES ($1)")
                    .await
                    .map_err(db)?,
                &[&((i + 1) as i64)],
            )
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(unavailable)
    }

    /// Queues `op` for a batch and waits for its answer.
    async fn batched<T>(&self, op: impl FnOnce(oneshot::Sender<T>) -> Op) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        let op = op(tx);
        self.ops[op.lane(self.ops.len())]
            .send(op)
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)
    }

    /// [`Store::ack`], also answering the receipts it made for senders not registered in
    /// this database (on a sharded relay, senders on other shards): those of every part
    /// that committed, even when a later part failed.
    pub(crate) async fn ack_placing(
        &self,
        addr: &Addr,
        envelope_ids: Vec<u64>,
        now_ms: u64,
        limits: ReceiptLimits,
    ) -> (Result<Vec<Addr>, StoreError>, Vec<Unplaced>) {
        // In parts of at most half a batch's locks, one after another.
        let (mut senders, mut unplaced) = (Vec::new(), Vec::new());
        for part in envelope_ids.chunks(MAX_BATCH_LOCKS / 2) {
            let addr = addr.clone();
            let answer = self
                .batched(|reply| Op::Ack {
                    addr,
                    ids: part.to_vec(),
                    now_ms,
                    limits,
                    reply,
                })
                .await
                .and_then(|a| a);
            match answer {
                Ok((s, u)) => {
                    senders.extend(s);
                    unplaced.extend(u);
                }
                Err(e) => return (Err(e), unplaced),
            }
        }
        senders.sort();
        senders.dedup();
        (Ok(senders), unplaced)
    }

    /// Forgets `addr`'s blob upload tokens (on a sharded relay they live on shard 0, apart
    /// from the device).
    pub(crate) async fn forget_upload_tokens(&self, addr: &Addr) -> Result<(), StoreError> {
        let c = self.client().await?;
        c.execute(
            "DELETE FROM upload_tokens WHERE user_id = $1 AND device_id = $2",
            &[&addr.user, &dev(addr)],
        )
        .await
        .map_err(db)?;
        Ok(())
    }

    /// Queues receipts made on another shard, within each owner's cap (dropped for owners
    /// not registered here).
    pub(crate) async fn queue_receipts(
        &self,
        list: Vec<Unplaced>,
        limits: ReceiptLimits,
    ) -> Result<(), StoreError> {
        let mut rest = list.into_iter().peekable();
        while rest.peek().is_some() {
            let part: Vec<Unplaced> = rest.by_ref().take(MAX_BATCH_LOCKS / 2).collect();
            self.batched(|reply| Op::Receipts {
                list: part,
                limits,
                reply,
            })
            .await??;
        }
        Ok(())
    }
}

impl PgStore {
    /// Deletes the expired envelopes and receipts of at most [`EXPIRE_CHUNK`] devices each,
    /// keeping their counts: how many envelopes, and whether there may be more.
    async fn expire_chunk(
        &self,
        now_ms: u64,
        receipts: ReceiptLimits,
    ) -> Result<(u64, bool), StoreError> {
        let cutoff = ms(now_ms.saturating_sub(receipts.ttl_ms));
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db)?;
        let devices = |rows: Vec<tokio_postgres::Row>| -> Vec<Addr> {
            rows.iter()
                .map(|r| Addr {
                    user: r.get(0),
                    device: r.get::<_, i64>(1) as u32,
                })
                .collect()
        };
        let mailboxes = devices(
            tx.query(
                &tx.prepare_cached(
                    "SELECT DISTINCT user_id, device_id FROM mailbox WHERE expires_ms <= $1 LIMIT $2",
                )
                .await
                .map_err(db)?,
                &[&ms(now_ms), &EXPIRE_CHUNK],
            )
            .await
            .map_err(db)?,
        );
        let queues = devices(
            tx.query(
                &tx.prepare_cached(
                    "SELECT DISTINCT user_id, device_id FROM receipts WHERE at_ms <= $1 LIMIT $2",
                )
                .await
                .map_err(db)?,
                &[&cutoff, &EXPIRE_CHUNK],
            )
            .await
            .map_err(db)?,
        );
        // Every class (batch::CLASSES, in order): no send, acknowledgement or new receipt of
        // these devices runs beside the sweep.
        for (class, list) in [
            ("mailbox", &mailboxes),
            ("acks", &mailboxes),
            ("receipts", &queues),
            ("receipt-acks", &queues),
        ] {
            let mut keys: Vec<i64> = list.iter().map(|a| lock_key(class, a)).collect();
            keys.sort_unstable();
            keys.dedup();
            tx.execute(&tx.prepare_cached(batch::LOCK).await.map_err(db)?, &[&keys])
                .await
                .map_err(db)?;
        }
        let users: Vec<&str> = mailboxes.iter().map(|a| a.user.as_str()).collect();
        let devs: Vec<i64> = mailboxes.iter().map(dev).collect();
        let gone: i64 = tx
            .query_one(
                &tx.prepare_cached(
                    "WITH gone AS (DELETE FROM mailbox mb USING UNNEST($2::TEXT[], $3::BIGINT[]) AS t(u, d)
                                   WHERE mb.user_id = t.u AND mb.device_id = t.d AND mb.expires_ms <= $1
                                   RETURNING mb.user_id, mb.device_id, mb.size,
                                     COALESCE(mb.sender_user, (SELECT m.sender_user FROM messages m WHERE m.id = mb.message)) AS s),
                          u AS (UPDATE mailbox_usage x SET count = x.count - g.n, bytes = x.bytes - g.b
                                FROM (SELECT user_id, device_id, COUNT(*) AS n, SUM(size) AS b FROM gone GROUP BY 1, 2) g
                                WHERE x.user_id = g.user_id AND x.device_id = g.device_id),
                          s AS (UPDATE mailbox_share x SET count = x.count - g.n, bytes = x.bytes - g.b
                                FROM (SELECT user_id, device_id, s, COUNT(*) AS n, SUM(size) AS b FROM gone GROUP BY 1, 2, 3) g
                                WHERE x.user_id = g.user_id AND x.device_id = g.device_id AND x.sender_user = g.s)
                     SELECT COUNT(*) FROM gone",
                )
                .await
                .map_err(db)?,
                &[&ms(now_ms), &users, &devs],
            )
            .await
            .map_err(db)?
            .get(0);
        tx.execute(
            &tx.prepare_cached(
                "DELETE FROM mailbox_share x USING UNNEST($1::TEXT[], $2::BIGINT[]) AS t(u, d)
                 WHERE x.user_id = t.u AND x.device_id = t.d AND x.count <= 0",
            )
            .await
            .map_err(db)?,
            &[&users, &devs],
        )
        .await
        .map_err(db)?;
        let users: Vec<&str> = queues.iter().map(|a| a.user.as_str()).collect();
        let devs: Vec<i64> = queues.iter().map(dev).collect();
        tx.execute(
            &tx.prepare_cached(
                "WITH gone AS (DELETE FROM receipts r USING UNNEST($2::TEXT[], $3::BIGINT[]) AS t(u, d)
                               WHERE r.user_id = t.u AND r.device_id = t.d AND r.at_ms <= $1
                               RETURNING r.user_id, r.device_id)
                 UPDATE receipt_queue q SET count = q.count - g.n
                 FROM (SELECT user_id, device_id, COUNT(*) AS n FROM gone GROUP BY 1, 2) g
                 WHERE q.user_id = g.user_id AND q.device_id = g.device_id",
            )
            .await
            .map_err(db)?,
            &[&cutoff, &users, &devs],
        )
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        let more = mailboxes.len() as i64 == EXPIRE_CHUNK || queues.len() as i64 == EXPIRE_CHUNK;
        Ok((gone as u64, more))
    }
}

/// Devices whose expired envelopes (and, separately, receipts) one expiry transaction
/// deletes: it takes two advisory locks per device, so at most 1,024 in all, as a batch.
const EXPIRE_CHUNK: i64 = 256;

/// A connection could not be had from the pool (within [`NETWORK_TIMEOUT`]).
fn unavailable(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Unavailable(Arc::new(e))
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
            + self
                .ops
                .iter()
                .map(|q| q.max_capacity() - q.capacity())
                .sum::<usize>()
    }

    fn deliver_on_commit(&self, hook: DeliveryHook) -> bool {
        self.hook.set(hook).is_ok()
    }

    async fn device(&self, addr: &Addr) -> Result<DeviceLookup, StoreError> {
        let c = self.client().await?;
        if let Some(r) = c
            .query_opt(
                &c.prepare_cached(
                    "SELECT identity_key FROM devices WHERE user_id = $1 AND device_id = $2",
                )
                .await
                .map_err(db)?,
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
                &c.prepare_cached("SELECT device_id, identity_key FROM devices WHERE user_id = $1 ORDER BY device_id").await.map_err(db)?,
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
        if tx
            .query_opt(
                &tx.prepare_cached(
                    "SELECT 1 FROM revoked_keys WHERE user_id = $1 AND identity_key = $2",
                )
                .await
                .map_err(db)?,
                &[&addr.user, &new_key],
            )
            .await
            .map_err(db)?
            .is_some()
        {
            return Err(StoreError::Revoked);
        }
        let n = tx
            .execute(
                &tx.prepare_cached("UPDATE devices SET identity_key = $4 WHERE user_id = $1 AND device_id = $2 AND identity_key = $3").await.map_err(db)?,
                &[&addr.user, &dev(addr), &old_key, &new_key],
            )
            .await
            .map_err(db)?;
        if n == 1 {
            for sql in DROP_PREKEYS {
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
        max_devices: usize,
    ) -> Result<bool, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db)?;
        // One registration per user at a time, so the device count cannot be overrun.
        tx.execute(
            &tx.prepare_cached(
                "SELECT pg_advisory_xact_lock(hashtextextended('devices/' || $1, 7800))",
            )
            .await
            .map_err(db)?,
            &[&addr.user],
        )
        .await
        .map_err(db)?;
        let row = tx
            .query_one(
                &tx.prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM devices WHERE user_id = $1 AND device_id = $2),
                            EXISTS (SELECT 1 FROM revoked_keys WHERE user_id = $1 AND identity_key = $3),
                            (SELECT COUNT(*) FROM devices WHERE user_id = $1)",
                )
                .await
                .map_err(db)?,
                &[&addr.user, &dev(addr), &identity_key],
            )
            .await
            .map_err(db)?;
        let (exists, revoked, count): (bool, bool, i64) = (row.get(0), row.get(1), row.get(2));
        if exists {
            return Ok(false);
        }
        if revoked {
            return Err(StoreError::Revoked);
        }
        if count as u64 >= max_devices as u64 {
            return Err(StoreError::TooManyDevices);
        }
        tx.execute(
            &tx.prepare_cached("INSERT INTO devices (user_id, device_id, identity_key, registered_ms) VALUES ($1, $2, $3, $4)")
                .await
                .map_err(db)?,
            &[&addr.user, &dev(addr), &identity_key, &ms(now_ms)],
        )
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(true)
    }

    async fn remove_device(&self, addr: &Addr) -> Result<bool, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db)?;
        // The batches' locks, in their order: no send or acknowledgement is half-counted.
        for class in batch::CLASSES {
            tx.execute(
                &tx.prepare_cached(batch::LOCK).await.map_err(db)?,
                &[&vec![lock_key(class, addr)]],
            )
            .await
            .map_err(db)?;
        }
        let Some(key) = tx
            .query_opt(
                &tx.prepare_cached(
                    "SELECT identity_key FROM devices WHERE user_id = $1 AND device_id = $2 FOR UPDATE",
                )
                .await
                .map_err(db)?,
                &[&addr.user, &dev(addr)],
            )
            .await
            .map_err(db)?
            .map(|r| r.get::<_, Vec<u8>>(0))
        else {
            return Ok(false);
        };
        tx.execute(
            &tx.prepare_cached("INSERT INTO revoked_keys (user_id, identity_key, removed_ms) VALUES ($1, $2, $3)
                 ON CONFLICT (user_id, identity_key) DO UPDATE SET removed_ms = EXCLUDED.removed_ms")
                .await
                .map_err(db)?,
            &[&addr.user, &key, &ms(crate::now_ms())],
        )
        .await
        .map_err(db)?;
        // The mailbox goes; its messages lose a reference each, and those nobody else awaits
        // go too.
        // Shared messages' rows locked in id order, as batches lock them.
        tx.query(
            &tx.prepare_cached(
                "SELECT id FROM messages WHERE id IN
                   (SELECT message FROM mailbox WHERE user_id = $1 AND device_id = $2)
                 ORDER BY id FOR UPDATE",
            )
            .await
            .map_err(db)?,
            &[&addr.user, &dev(addr)],
        )
        .await
        .map_err(db)?;
        let unreferenced: Vec<i64> = tx
            .query(
                &tx.prepare_cached(
                    "WITH gone AS (DELETE FROM mailbox WHERE user_id = $1 AND device_id = $2 RETURNING message),
                          counted AS (SELECT message, COUNT(*) AS n FROM gone WHERE message IS NOT NULL GROUP BY message)
                     UPDATE messages x SET refs = x.refs - counted.n FROM counted
                     WHERE x.id = counted.message RETURNING x.id, x.refs",
                )
                .await
                .map_err(db)?,
                &[&addr.user, &dev(addr)],
            )
            .await
            .map_err(db)?
            .iter()
            .filter(|r| r.get::<_, i64>(1) <= 0)
            .map(|r| r.get(0))
            .collect();
        // Its own statement: one statement cannot both update and delete a row.
        tx.execute(
            &tx.prepare_cached("DELETE FROM messages WHERE id = ANY($1::BIGINT[])")
                .await
                .map_err(db)?,
            &[&unreferenced],
        )
        .await
        .map_err(db)?;
        for sql in [
            "DELETE FROM receipts WHERE user_id = $1 AND device_id = $2",
            "DELETE FROM receipt_queue WHERE user_id = $1 AND device_id = $2",
            "DELETE FROM mailbox_usage WHERE user_id = $1 AND device_id = $2",
            "DELETE FROM mailbox_share WHERE user_id = $1 AND device_id = $2",
            "DELETE FROM upload_tokens WHERE user_id = $1 AND device_id = $2",
            "DELETE FROM devices WHERE user_id = $1 AND device_id = $2",
        ]
        .into_iter()
        .chain(DROP_PREKEYS)
        {
            tx.execute(sql, &[&addr.user, &dev(addr)])
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        Ok(true)
    }

    async fn upload_prekeys(
        &self,
        addr: &Addr,
        upload: PrekeyUpload,
        caps: PrekeyCaps,
    ) -> Result<PrekeyStock, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db)?;
        let (user, device) = (&addr.user, &dev(addr));
        // Serialises uploads of one device, so the caps hold under concurrent uploads.
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('prekeys/' || $1 || '/' || $2::BIGINT::TEXT, 7801))",
            &[user, device],
        )
        .await
        .map_err(db)?;
        let before = stock(
            &tx.query_one(
                &tx.prepare_cached(PREKEY_STOCK).await.map_err(db)?,
                &[user, device],
            )
            .await
            .map_err(db)?,
        );
        let over = |have: u64, adding: usize, cap: u64| adding > 0 && have + adding as u64 > cap;
        if over(before.one_time, upload.one_time.len(), caps.one_time)
            || over(
                before.kem_one_time,
                upload.kem_one_time.len(),
                caps.kem_one_time,
            )
        {
            return Err(StoreError::PrekeyStockFull);
        }
        if upload.post_quantum && !before.kem_last_resort && upload.kem_last_resort.is_none() {
            return Err(StoreError::NoLastResort);
        }
        if let Some((spk, sig)) = upload.signed {
            tx.execute(
                &tx.prepare_cached("INSERT INTO signed_prekeys (user_id, device_id, id, key, signature, post_quantum) VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (user_id, device_id) DO UPDATE SET id = EXCLUDED.id, key = EXCLUDED.key, signature = EXCLUDED.signature, post_quantum = EXCLUDED.post_quantum").await.map_err(db)?,
                &[user, device, &i64::from(spk.id), &spk.key, &sig, &upload.post_quantum],
            )
            .await
            .map_err(db)?;
        }
        if !upload.one_time.is_empty() {
            let ids: Vec<i64> = upload.one_time.iter().map(|k| i64::from(k.id)).collect();
            let keys: Vec<Vec<u8>> = upload.one_time.into_iter().map(|k| k.key).collect();
            tx.execute(
                &tx.prepare_cached(
                    "INSERT INTO one_time_prekeys (user_id, device_id, id, key)
                 SELECT $1, $2, i, k FROM UNNEST($3::BIGINT[], $4::BYTEA[]) AS t(i, k)
                 ON CONFLICT (user_id, device_id, id) DO UPDATE SET key = EXCLUDED.key",
                )
                .await
                .map_err(db)?,
                &[user, device, &ids, &keys],
            )
            .await
            .map_err(db)?;
        }
        if !upload.kem_one_time.is_empty() {
            let ids: Vec<i64> = upload
                .kem_one_time
                .iter()
                .map(|k| i64::from(k.id))
                .collect();
            let (keys, sigs): (Vec<Vec<u8>>, Vec<Vec<u8>>) = upload
                .kem_one_time
                .into_iter()
                .map(|k| (k.key, k.signature))
                .unzip();
            tx.execute(
                &tx.prepare_cached(
                    "INSERT INTO kem_prekeys (user_id, device_id, id, key, signature)
                 SELECT $1, $2, i, k, s FROM UNNEST($3::BIGINT[], $4::BYTEA[], $5::BYTEA[]) AS t(i, k, s)
                 ON CONFLICT (user_id, device_id, id) DO UPDATE SET key = EXCLUDED.key, signature = EXCLUDED.signature",
                )
                .await
                .map_err(db)?,
                &[user, device, &ids, &keys, &sigs],
            )
            .await
            .map_err(db)?;
        }
        if let Some(k) = upload.kem_last_resort {
            tx.execute(
                &tx.prepare_cached("INSERT INTO last_resort_kem_prekeys (user_id, device_id, id, key, signature) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (user_id, device_id) DO UPDATE SET id = EXCLUDED.id, key = EXCLUDED.key, signature = EXCLUDED.signature").await.map_err(db)?,
                &[user, device, &i64::from(k.id), &k.key, &k.signature],
            )
            .await
            .map_err(db)?;
        }
        let after = stock(
            &tx.query_one(
                &tx.prepare_cached(PREKEY_STOCK).await.map_err(db)?,
                &[user, device],
            )
            .await
            .map_err(db)?,
        );
        tx.commit().await.map_err(db)?;
        Ok(after)
    }

    async fn take_bundle(
        &self,
        addr: &Addr,
        one_time: bool,
    ) -> Result<Option<StoredBundle>, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db)?;
        let (user, device) = (&addr.user, &dev(addr));
        let Some(row) = tx
            .query_opt(
                &tx.prepare_cached(
                    "SELECT d.identity_key, s.id, s.key, s.signature, s.post_quantum FROM devices d
                 JOIN signed_prekeys s ON s.user_id = d.user_id AND s.device_id = d.device_id
                 WHERE d.user_id = $1 AND d.device_id = $2",
                )
                .await
                .map_err(db)?,
                &[user, device],
            )
            .await
            .map_err(db)?
        else {
            return Ok(None);
        };
        // Each key is handed out once: a concurrent fetch skips a key another holds. KEM
        // prekeys go only with a post-quantum signed prekey, which promises one.
        let post_quantum: bool = row.get(4);
        let (opk, kem_one_time) = if !one_time {
            (None, None)
        } else {
            let opk = tx
                .query_opt(
                    &tx.prepare_cached("DELETE FROM one_time_prekeys WHERE (user_id, device_id, id) = (
                    SELECT user_id, device_id, id FROM one_time_prekeys
                    WHERE user_id = $1 AND device_id = $2 ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
                 RETURNING id, key").await.map_err(db)?,
                    &[user, device],
                )
                .await
                .map_err(db)?
                .map(|r| StoredPrekey {
                    id: r.get::<_, i64>(0) as u32,
                    key: r.get(1),
                });
            let kem = if !post_quantum {
                None
            } else {
                tx.query_opt(
                    &tx.prepare_cached("DELETE FROM kem_prekeys WHERE (user_id, device_id, id) = (
                    SELECT user_id, device_id, id FROM kem_prekeys
                    WHERE user_id = $1 AND device_id = $2 ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
                 RETURNING id, key, signature").await.map_err(db)?,
                    &[user, device],
                )
                .await
                .map_err(db)?
                .map(|r| kem_prekey(&r))
            };
            (opk, kem)
        };
        let kem_prekey = match kem_one_time {
            Some(k) => Some((k, true)),
            None if !post_quantum => None,
            None => tx
                .query_opt(
                    &tx.prepare_cached(
                        "SELECT id, key, signature FROM last_resort_kem_prekeys
                         WHERE user_id = $1 AND device_id = $2",
                    )
                    .await
                    .map_err(db)?,
                    &[user, device],
                )
                .await
                .map_err(db)?
                .map(|r| (kem_prekey(&r), false)),
        };
        tx.commit().await.map_err(db)?;
        Ok(Some(StoredBundle {
            identity_key: row.get(0),
            signed_prekey: StoredPrekey {
                id: row.get::<_, i64>(1) as u32,
                key: row.get(2),
            },
            signature: row.get(3),
            one_time_prekey: opk,
            kem_prekey,
        }))
    }

    async fn prekey_count(&self, addr: &Addr) -> Result<PrekeyStock, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_one(
                &c.prepare_cached(PREKEY_STOCK).await.map_err(db)?,
                &[&addr.user, &dev(addr)],
            )
            .await
            .map_err(db)?;
        Ok(stock(&row))
    }

    async fn enqueue(
        &self,
        sender: &Addr,
        recipients: Vec<Addr>,
        message_id: Vec<u8>,
        ciphertext: Vec<u8>,
        now_ms: u64,
        limits: MailboxLimits,
    ) -> Result<Refusals, StoreError> {
        let out = Outgoing {
            recipients,
            message_id,
            ciphertext,
            franking_commitment: None,
        };
        self.enqueue_many(sender, vec![out], now_ms, limits)
            .await
            .pop()
            .unwrap_or(Err(StoreError::CommitFailed))
    }

    async fn enqueue_many(
        &self,
        sender: &Addr,
        batch: Vec<Outgoing>,
        now_ms: u64,
        limits: MailboxLimits,
    ) -> Vec<Result<Refusals, StoreError>> {
        // In parts that each fit one batch's lock and byte limits, one after another (so in
        // order).
        let mut results = Vec::with_capacity(batch.len());
        let mut rest = batch.into_iter().peekable();
        while rest.peek().is_some() {
            let (mut part, mut locks, mut bytes) = (Vec::new(), 0, 0);
            while let Some(out) = rest.next_if(|o| {
                part.is_empty()
                    || (locks + o.recipients.len() <= MAX_BATCH_LOCKS
                        && bytes + o.ciphertext.len() <= MAX_BATCH_BYTES)
            }) {
                locks += out.recipients.len();
                bytes += out.ciphertext.len();
                part.push(out);
            }
            let n = part.len();
            let sender = sender.clone();
            match self
                .batched(|reply| Op::Enqueue {
                    sender,
                    batch: part,
                    now_ms,
                    limits,
                    reply,
                })
                .await
            {
                Ok(r) => results.extend(r),
                Err(e) => results.extend((0..n).map(|_| Err(e.clone()))),
            }
        }
        results
    }

    async fn franking_key(&self, fresh: [u8; 32]) -> Result<[u8; 32], StoreError> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO relay_keys (name, key) VALUES ('franking', $1) ON CONFLICT (name) DO NOTHING",
            &[&&fresh[..]],
        )
        .await
        .map_err(db)?;
        let key: Vec<u8> = c
            .query_one("SELECT key FROM relay_keys WHERE name = 'franking'", &[])
            .await
            .map_err(db)?
            .get(0);
        <[u8; 32]>::try_from(key.as_slice())
            .map_err(|_| db(std::io::Error::other("stored franking key is not 32 bytes")))
    }

    async fn put_report(&self, r: StoredReport, max_per_day: u32) -> Result<bool, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db)?;
        // One reporting user's reports at a time, so the daily count holds under concurrency.
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('reports/' || $1, 7800))",
            &[&r.reporter.user],
        )
        .await
        .map_err(db)?;
        let known = tx
            .query_opt(
                "SELECT 1 FROM reports WHERE reporter_user = $1 AND reporter_device = $2 AND tag = $3",
                &[&r.reporter.user, &dev(&r.reporter), &&r.tag[..]],
            )
            .await
            .map_err(db)?;
        if known.is_some() {
            return Ok(false);
        }
        let recent: i64 = tx
            .query_one(
                "SELECT COUNT(*) FROM reports WHERE reporter_user = $1 AND received_ms > $2",
                &[&r.reporter.user, &ms(r.received_ms.saturating_sub(DAY_MS))],
            )
            .await
            .map_err(db)?
            .get(0);
        if recent >= i64::from(max_per_day) {
            return Err(StoreError::TooManyReports);
        }
        tx.execute(
            "INSERT INTO reports (reporter_user, reporter_device, sender_user, sender_device, server_ms, content, reason, tag, received_ms, consent)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            &[
                &r.reporter.user,
                &dev(&r.reporter),
                &r.sender.user,
                &dev(&r.sender),
                &ms(r.server_ms),
                &r.content,
                &r.reason,
                &&r.tag[..],
                &ms(r.received_ms),
                &r.consent,
            ],
        )
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(true)
    }

    async fn reports(&self) -> Result<Vec<StoredReport>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT id, reporter_user, reporter_device, sender_user, sender_device, server_ms, content, reason, tag, received_ms, consent
                 FROM reports ORDER BY id",
                &[],
            )
            .await
            .map_err(db)?;
        Ok(rows
            .iter()
            .map(|r| StoredReport {
                id: r.get::<_, i64>(0) as u64,
                reporter: Addr {
                    user: r.get(1),
                    device: r.get::<_, i64>(2) as u32,
                },
                sender: Addr {
                    user: r.get(3),
                    device: r.get::<_, i64>(4) as u32,
                },
                server_ms: r.get::<_, i64>(5) as u64,
                content: r.get(6),
                reason: r.get(7),
                tag: <[u8; 32]>::try_from(r.get::<_, Vec<u8>>(8).as_slice()).unwrap_or([0; 32]),
                received_ms: r.get::<_, i64>(9) as u64,
                consent: r.get(10),
            })
            .collect())
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
                &c.prepare_cached("SELECT mb.envelope_id, COALESCE(mb.sender_user, m.sender_user), COALESCE(mb.sender_device, m.sender_device),
                        COALESCE(mb.message_id, m.message_id), COALESCE(mb.server_ms, m.server_ms),
                        COALESCE(mb.ciphertext, m.ciphertext), COALESCE(mb.franking, m.franking)
                 FROM mailbox mb LEFT JOIN messages m ON m.id = mb.message
                 WHERE mb.user_id = $1 AND mb.device_id = $2 AND mb.envelope_id > $3 AND mb.expires_ms > $4
                 ORDER BY mb.envelope_id LIMIT $5").await.map_err(db)?,
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
                franking_commitment: r
                    .get::<_, Option<Vec<u8>>>(6)
                    .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok()),
            })
            .collect())
    }

    async fn ack(
        &self,
        addr: &Addr,
        envelope_ids: Vec<u64>,
        now_ms: u64,
        limits: ReceiptLimits,
    ) -> Result<Vec<Addr>, StoreError> {
        // Receipts for senders not registered here (removed devices) are not queued.
        self.ack_placing(addr, envelope_ids, now_ms, limits).await.0
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
                &c.prepare_cached("SELECT receipt_id, read, recipient_user, recipient_device, message_id, at_ms FROM receipts
                 WHERE user_id = $1 AND device_id = $2 AND receipt_id > $3 ORDER BY receipt_id LIMIT $4").await.map_err(db)?,
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
        let addr = addr.clone();
        self.batched(|reply| Op::AckReceipts {
            addr,
            ids: receipt_ids,
            reply,
        })
        .await?
    }

    async fn touch(&self, user: &str, now_ms: u64) -> Result<(), StoreError> {
        let user = user.to_string();
        self.batched(|reply| Op::Touch {
            user,
            now_ms,
            reply,
        })
        .await?
    }

    async fn presence(&self, user: &str) -> Result<Option<(u64, bool)>, StoreError> {
        let c = self.client().await?;
        Ok(c.query_opt(
            &c.prepare_cached("SELECT last_seen_ms, hidden FROM presence WHERE user_id = $1")
                .await
                .map_err(db)?,
            &[&user],
        )
        .await
        .map_err(db)?
        .map(|r| (r.get::<_, i64>(0) as u64, r.get(1))))
    }

    async fn grant_presence(
        &self,
        owner: &str,
        viewers: Vec<String>,
        until_ms: u64,
    ) -> Result<(), StoreError> {
        let c = self.client().await?;
        c.execute(
            &c.prepare_cached(
                "INSERT INTO presence_grants (owner, viewer, until_ms)
                 SELECT $1, v, $3 FROM UNNEST($2::TEXT[]) AS t(v)
                 ON CONFLICT (owner, viewer)
                 DO UPDATE SET until_ms = GREATEST(presence_grants.until_ms, EXCLUDED.until_ms)",
            )
            .await
            .map_err(db)?,
            &[&owner, &viewers, &ms(until_ms)],
        )
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn presence_allowed(
        &self,
        owner: &str,
        viewer: &str,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        let c = self.client().await?;
        Ok(c.query_opt(
            &c.prepare_cached(
                "SELECT 1 FROM presence_grants WHERE owner = $1 AND viewer = $2 AND until_ms > $3",
            )
            .await
            .map_err(db)?,
            &[&owner, &viewer, &ms(now_ms)],
        )
        .await
        .map_err(db)?
        .is_some())
    }

    async fn blob_usage(&self, addr: &Addr, day: u64) -> Result<u64, StoreError> {
        let c = self.client().await?;
        Ok(c.query_opt(
            &c.prepare_cached(
                "SELECT bytes FROM blob_usage WHERE user_id = $1 AND device_id = $2 AND day = $3",
            )
            .await
            .map_err(db)?,
            &[&addr.user, &dev(addr), &ms(day)],
        )
        .await
        .map_err(db)?
        .map_or(0, |r| r.get::<_, i64>(0) as u64))
    }

    async fn add_blob_usage(
        &self,
        addr: &Addr,
        day: u64,
        bytes: u64,
        quota: u64,
    ) -> Result<bool, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db)?;
        // The row's lock serialises one device's concurrent uploads.
        let added = tx
            .query_opt(
                &tx.prepare_cached(
                    "INSERT INTO blob_usage (user_id, device_id, day, bytes) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (user_id, device_id, day) DO UPDATE SET bytes = blob_usage.bytes + EXCLUDED.bytes
                     RETURNING bytes",
                )
                .await
                .map_err(db)?,
                &[&addr.user, &dev(addr), &ms(day), &ms(bytes)],
            )
            .await
            .map_err(db)?
            .is_some_and(|r| r.get::<_, i64>(0) as u64 <= quota);
        if !added {
            // Rolled back: nothing counted.
            return Ok(false);
        }
        tx.commit().await.map_err(db)?;
        Ok(true)
    }

    async fn set_hidden(&self, user: &str, hidden: bool) -> Result<(), StoreError> {
        let c = self.client().await?;
        c.execute(
            &c.prepare_cached(
                "INSERT INTO presence (user_id, last_seen_ms, hidden) VALUES ($1, 0, $2)
             ON CONFLICT (user_id) DO UPDATE SET hidden = EXCLUDED.hidden",
            )
            .await
            .map_err(db)?,
            &[&user, &hidden],
        )
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn expire(&self, now_ms: u64, receipts: ReceiptLimits) -> Result<u64, StoreError> {
        let mut gone = 0;
        // Mailboxes and receipt queues, a chunk of devices per transaction, each under the
        // batches' locks, their counts kept.
        loop {
            let (n, more) = self.expire_chunk(now_ms, receipts).await?;
            gone += n;
            if !more {
                break;
            }
        }
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db)?;
        tx.execute(
            &tx.prepare_cached("DELETE FROM blob_usage WHERE day < $1")
                .await
                .map_err(db)?,
            &[&ms((now_ms / DAY_MS).saturating_sub(1))],
        )
        .await
        .map_err(db)?;
        tx.execute(
            &tx.prepare_cached("DELETE FROM presence_grants WHERE until_ms <= $1")
                .await
                .map_err(db)?,
            &[&ms(now_ms)],
        )
        .await
        .map_err(db)?;
        tx.execute(
            &tx.prepare_cached("DELETE FROM upload_tokens WHERE expires_ms <= $1")
                .await
                .map_err(db)?,
            &[&ms(now_ms)],
        )
        .await
        .map_err(db)?;
        tx.execute(
            &tx.prepare_cached("DELETE FROM messages WHERE expires_ms <= $1")
                .await
                .map_err(db)?,
            &[&ms(now_ms)],
        )
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(gone)
    }

    async fn put_blob(&self, id: &str, size: u64, expires_ms: u64) -> Result<(), StoreError> {
        let c = self.client().await?;
        c.execute(
            &c.prepare_cached("INSERT INTO blobs (id, size, expires_ms) VALUES ($1, $2, $3)
             ON CONFLICT (id) DO UPDATE SET expires_ms = GREATEST(blobs.expires_ms, EXCLUDED.expires_ms)").await.map_err(db)?,
            &[&id, &ms(size), &ms(expires_ms)],
        )
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn put_upload_token(
        &self,
        token_hash: [u8; 32],
        addr: &Addr,
        expires_ms: u64,
    ) -> Result<(), StoreError> {
        let c = self.client().await?;
        c.execute(
            &c.prepare_cached(
                "INSERT INTO upload_tokens (token_hash, user_id, device_id, expires_ms) VALUES ($1, $2, $3, $4)",
            )
            .await
            .map_err(db)?,
            &[&token_hash.as_slice(), &addr.user, &dev(addr), &ms(expires_ms)],
        )
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn take_upload_token(
        &self,
        token_hash: [u8; 32],
        now_ms: u64,
    ) -> Result<Option<Addr>, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                &c.prepare_cached(
                    "DELETE FROM upload_tokens WHERE token_hash = $1 RETURNING user_id, device_id, expires_ms",
                )
                .await
                .map_err(db)?,
                &[&token_hash.as_slice()],
            )
            .await
            .map_err(db)?;
        Ok(row
            .filter(|r| r.get::<_, i64>(2) as u64 > now_ms)
            .map(|r| Addr {
                user: r.get(0),
                device: r.get::<_, i64>(1) as u32,
            }))
    }

    async fn blob(&self, id: &str, now_ms: u64) -> Result<Option<u64>, StoreError> {
        let c = self.client().await?;
        Ok(c.query_opt(
            &c.prepare_cached("SELECT size FROM blobs WHERE id = $1 AND expires_ms > $2")
                .await
                .map_err(db)?,
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
                &c.prepare_cached("DELETE FROM blobs WHERE expires_ms <= $1 RETURNING id")
                    .await
                    .map_err(db)?,
                &[&ms(now_ms)],
            )
            .await
            .map_err(db)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }
}
