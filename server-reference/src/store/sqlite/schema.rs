//! The SQLite schema: its migrations, applied in order by [`migrate`].

use rusqlite::Connection;

use crate::store::StoreError;

/// The schema, one migration per version (`PRAGMA user_version`).
const MIGRATIONS: &[&str] = &[
    // 1
    "CREATE TABLE devices (
        user_id TEXT NOT NULL, device_id INTEGER NOT NULL, identity_key BLOB NOT NULL,
        registered_ms INTEGER NOT NULL, PRIMARY KEY (user_id, device_id));
     CREATE TABLE signed_prekeys (
        user_id TEXT NOT NULL, device_id INTEGER NOT NULL, id INTEGER NOT NULL, key BLOB NOT NULL,
        signature BLOB NOT NULL, PRIMARY KEY (user_id, device_id));
     CREATE TABLE one_time_prekeys (
        user_id TEXT NOT NULL, device_id INTEGER NOT NULL, id INTEGER NOT NULL, key BLOB NOT NULL,
        PRIMARY KEY (user_id, device_id, id));
     CREATE TABLE messages (
        id INTEGER PRIMARY KEY, sender_user TEXT NOT NULL, sender_device INTEGER NOT NULL,
        message_id BLOB NOT NULL, server_ms INTEGER NOT NULL, expires_ms INTEGER NOT NULL,
        ciphertext BLOB NOT NULL, refs INTEGER NOT NULL);
     CREATE TABLE mailbox (
        envelope_id INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT NOT NULL,
        device_id INTEGER NOT NULL, message INTEGER NOT NULL REFERENCES messages(id),
        size INTEGER NOT NULL, expires_ms INTEGER NOT NULL);
     CREATE INDEX mailbox_by_device ON mailbox (user_id, device_id, envelope_id);
     CREATE INDEX mailbox_by_expiry ON mailbox (expires_ms);
     CREATE TABLE mailbox_usage (
        user_id TEXT NOT NULL, device_id INTEGER NOT NULL, count INTEGER NOT NULL,
        bytes INTEGER NOT NULL, PRIMARY KEY (user_id, device_id));
     CREATE TABLE receipts (
        receipt_id INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT NOT NULL,
        device_id INTEGER NOT NULL, read INTEGER NOT NULL, recipient_user TEXT NOT NULL,
        recipient_device INTEGER NOT NULL, message_id BLOB NOT NULL, at_ms INTEGER NOT NULL);
     CREATE INDEX receipts_by_device ON receipts (user_id, device_id, receipt_id);
     CREATE TABLE presence (user_id TEXT PRIMARY KEY, last_seen_ms INTEGER NOT NULL, hidden INTEGER NOT NULL);",
    // 2
    "CREATE TABLE blobs (id TEXT PRIMARY KEY, size INTEGER NOT NULL, expires_ms INTEGER NOT NULL);
     CREATE INDEX blobs_by_expiry ON blobs (expires_ms);",
    // 3
    "CREATE TABLE upload_tokens (token_hash BLOB PRIMARY KEY, user_id TEXT NOT NULL,
        device_id INTEGER NOT NULL, expires_ms INTEGER NOT NULL);",
    // 4: an envelope for one recipient keeps its message in its mailbox row (`message` is
    // NULL); only a multi-recipient send stores its ciphertext once in `messages`, referenced
    // from each mailbox row. Expiry finds messages by time (it was a scan of the whole
    // table). Mailbox usage is counted on the database thread (`Db::usage`) instead of in a
    // table written twice per envelope. Envelope ids keep counting from where they were.
    "CREATE TABLE mailbox4 (
        envelope_id INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT NOT NULL,
        device_id INTEGER NOT NULL, message INTEGER, sender_user TEXT, sender_device INTEGER,
        message_id BLOB, server_ms INTEGER, ciphertext BLOB, size INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL);
     INSERT INTO mailbox4 (envelope_id, user_id, device_id, message, size, expires_ms)
        SELECT envelope_id, user_id, device_id, message, size, expires_ms FROM mailbox;
     DELETE FROM sqlite_sequence WHERE name = 'mailbox4';
     INSERT INTO sqlite_sequence (name, seq) SELECT 'mailbox4', seq FROM sqlite_sequence WHERE name = 'mailbox';
     DROP TABLE mailbox;
     ALTER TABLE mailbox4 RENAME TO mailbox;
     CREATE INDEX mailbox_by_device ON mailbox (user_id, device_id, envelope_id);
     CREATE INDEX mailbox_by_expiry ON mailbox (expires_ms);
     CREATE INDEX messages_by_expiry ON messages (expires_ms);
     DROP TABLE mailbox_usage;",
    // 5: envelope and receipt ids come from counters on the database thread (`IdCounter`),
    // whose high-water marks are kept in `id_marks`, instead of AUTOINCREMENT, which wrote
    // `sqlite_sequence` for every envelope and every receipt. The tables are rebuilt without
    // it (same columns and indexes); the counters continue from the old sequences.
    "CREATE TABLE mailbox5 (
        envelope_id INTEGER PRIMARY KEY, user_id TEXT NOT NULL,
        device_id INTEGER NOT NULL, message INTEGER, sender_user TEXT, sender_device INTEGER,
        message_id BLOB, server_ms INTEGER, ciphertext BLOB, size INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL);
     INSERT INTO mailbox5 SELECT envelope_id, user_id, device_id, message, sender_user,
        sender_device, message_id, server_ms, ciphertext, size, expires_ms FROM mailbox;
     CREATE TABLE receipts5 (
        receipt_id INTEGER PRIMARY KEY, user_id TEXT NOT NULL,
        device_id INTEGER NOT NULL, read INTEGER NOT NULL, recipient_user TEXT NOT NULL,
        recipient_device INTEGER NOT NULL, message_id BLOB NOT NULL, at_ms INTEGER NOT NULL);
     INSERT INTO receipts5 SELECT receipt_id, user_id, device_id, read, recipient_user,
        recipient_device, message_id, at_ms FROM receipts;
     CREATE TABLE id_marks (name TEXT PRIMARY KEY, next INTEGER NOT NULL);
     INSERT INTO id_marks (name, next) VALUES
        ('envelope', COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'mailbox'), 0) + 1),
        ('receipt', COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'receipts'), 0) + 1);
     DROP TABLE mailbox;
     DROP TABLE receipts;
     ALTER TABLE mailbox5 RENAME TO mailbox;
     ALTER TABLE receipts5 RENAME TO receipts;
     CREATE INDEX mailbox_by_device ON mailbox (user_id, device_id, envelope_id);
     CREATE INDEX mailbox_by_expiry ON mailbox (expires_ms);
     CREATE INDEX receipts_by_device ON receipts (user_id, device_id, receipt_id);",
    // 6: abuse resistance. `revoked_keys`: identity keys whose device its owner removed;
    // they cannot register again, whatever link they carry. (Receipts expire by time,
    // found by a scan once a minute: an index on their time would cost every receipt.)
    "CREATE TABLE revoked_keys (
        user_id TEXT NOT NULL, identity_key BLOB NOT NULL, removed_ms INTEGER NOT NULL,
        PRIMARY KEY (user_id, identity_key));",
    // 7: who may see whose presence: a user that sent envelopes to another lets it see its
    // presence for a while (SPEC §14.2).
    "CREATE TABLE presence_grants (owner TEXT NOT NULL, viewer TEXT NOT NULL,
        until_ms INTEGER NOT NULL, PRIMARY KEY (owner, viewer)) WITHOUT ROWID;
     CREATE INDEX presence_grants_by_expiry ON presence_grants (until_ms);",
    // 8: blob bytes each device uploaded per day (UTC), for its daily quota.
    "CREATE TABLE blob_usage (user_id TEXT NOT NULL, device_id INTEGER NOT NULL,
        day INTEGER NOT NULL, bytes INTEGER NOT NULL, PRIMARY KEY (user_id, device_id, day))
        WITHOUT ROWID;",
    // 9: post-quantum prekeys (SPEC §5.3): signed one-time KEM prekeys, handed out once
    // each, and one last-resort KEM prekey per device; whether the signed prekey is
    // post-quantum (only then do bundles carry a KEM prekey).
    "ALTER TABLE signed_prekeys ADD COLUMN post_quantum INTEGER NOT NULL DEFAULT 0;
     CREATE TABLE kem_prekeys (user_id TEXT NOT NULL, device_id INTEGER NOT NULL,
        id INTEGER NOT NULL, key BLOB NOT NULL, signature BLOB NOT NULL,
        PRIMARY KEY (user_id, device_id, id)) WITHOUT ROWID;
     CREATE TABLE last_resort_kem_prekeys (user_id TEXT NOT NULL, device_id INTEGER NOT NULL,
        id INTEGER NOT NULL, key BLOB NOT NULL, signature BLOB NOT NULL,
        PRIMARY KEY (user_id, device_id)) WITHOUT ROWID;",
    // 10: message franking (SPEC §17): the sender's commitment kept with the message, the
    // relay's franking key, and verified abuse reports.
    "ALTER TABLE messages ADD COLUMN franking BLOB;
     ALTER TABLE mailbox ADD COLUMN franking BLOB;
     CREATE TABLE relay_keys (name TEXT PRIMARY KEY, key BLOB NOT NULL) WITHOUT ROWID;
     CREATE TABLE reports (id INTEGER PRIMARY KEY AUTOINCREMENT,
        reporter_user TEXT NOT NULL, reporter_device INTEGER NOT NULL,
        sender_user TEXT NOT NULL, sender_device INTEGER NOT NULL, server_ms INTEGER NOT NULL,
        content BLOB NOT NULL, reason TEXT NOT NULL, consent TEXT NOT NULL, tag BLOB NOT NULL,
        received_ms INTEGER NOT NULL, UNIQUE (reporter_user, reporter_device, tag));
     CREATE INDEX reports_by_reporter ON reports (reporter_user, received_ms);",
];

pub(super) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    migrate_to(conn, MIGRATIONS.len())
}

pub(super) fn migrate_to(conn: &mut Connection, target: usize) -> Result<(), StoreError> {
    let version = conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))? as usize;
    for (i, sql) in MIGRATIONS.iter().enumerate().take(target).skip(version) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))?;
        tx.commit()?;
    }
    Ok(())
}
