//! The read-only reader of a relay database that `hush demo` uses to show what the relay
//! holds.

use std::path::Path;

use rusqlite::Connection;

use super::{Addr, StoreError, StoredEnvelope};

/// What a relay database holds, read for auditing (`hush demo` prints it). Only public
/// keys, ciphertext, receipts and timestamps are there to read.
#[derive(Clone, Debug, Default)]
pub struct Inspection {
    /// Registered devices: (address, identity key).
    pub devices: Vec<(Addr, Vec<u8>)>,
    /// Signed prekeys stored.
    pub signed_prekeys: u64,
    /// One-time prekeys not yet handed out.
    pub one_time_prekeys: u64,
    /// Signed prekeys that promise a KEM prekey (PQXDH).
    pub post_quantum_signed_prekeys: u64,
    /// One-time KEM prekeys not yet handed out.
    pub kem_prekeys: u64,
    /// Last-resort KEM prekeys.
    pub last_resort_kem_prekeys: u64,
    /// Envelopes waiting in mailboxes: (recipient, envelope).
    pub queued: Vec<(Addr, StoredEnvelope)>,
    /// Receipts waiting for their senders.
    pub receipts: u64,
    /// Presence rows: (user, last seen ms, hides last seen).
    pub presence: Vec<(String, u64, bool)>,
    /// Blob records: (id, size).
    pub blobs: Vec<(String, u64)>,
}

/// Reads a relay database (read-only; safe while the relay runs).
pub fn inspect(path: &Path) -> Result<Inspection, StoreError> {
    let c = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let count = |sql: &str| -> Result<u64, StoreError> {
        Ok(c.query_row(sql, [], |r| r.get::<_, i64>(0))? as u64)
    };
    let mut out = Inspection {
        signed_prekeys: count("SELECT COUNT(*) FROM signed_prekeys")?,
        one_time_prekeys: count("SELECT COUNT(*) FROM one_time_prekeys")?,
        post_quantum_signed_prekeys: count(
            "SELECT COUNT(*) FROM signed_prekeys WHERE post_quantum = 1",
        )?,
        kem_prekeys: count("SELECT COUNT(*) FROM kem_prekeys")?,
        last_resort_kem_prekeys: count("SELECT COUNT(*) FROM last_resort_kem_prekeys")?,
        receipts: count("SELECT COUNT(*) FROM receipts")?,
        ..Inspection::default()
    };
    let mut s = c.prepare(
        "SELECT user_id, device_id, identity_key FROM devices ORDER BY user_id, device_id",
    )?;
    out.devices = s
        .query_map([], |r| {
            Ok((
                Addr {
                    user: r.get(0)?,
                    device: r.get(1)?,
                },
                r.get(2)?,
            ))
        })?
        .collect::<Result<_, _>>()?;
    let mut s = c.prepare(
        "SELECT b.user_id, b.device_id, b.envelope_id, COALESCE(b.sender_user, m.sender_user), COALESCE(b.sender_device, m.sender_device),
                COALESCE(b.message_id, m.message_id), COALESCE(b.server_ms, m.server_ms), COALESCE(b.ciphertext, m.ciphertext),
                COALESCE(b.franking, m.franking)
         FROM mailbox b LEFT JOIN messages m ON m.id = b.message ORDER BY b.envelope_id",
    )?;
    out.queued = s
        .query_map([], |r| {
            Ok((
                Addr {
                    user: r.get(0)?,
                    device: r.get(1)?,
                },
                StoredEnvelope {
                    envelope_id: r.get::<_, i64>(2)? as u64,
                    sender: Addr {
                        user: r.get(3)?,
                        device: r.get(4)?,
                    },
                    message_id: r.get(5)?,
                    server_ms: r.get::<_, i64>(6)? as u64,
                    ciphertext: r.get(7)?,
                    franking_commitment: r
                        .get::<_, Option<Vec<u8>>>(8)?
                        .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok()),
                },
            ))
        })?
        .collect::<Result<_, _>>()?;
    let mut s = c.prepare("SELECT user_id, last_seen_ms, hidden FROM presence ORDER BY user_id")?;
    out.presence = s
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get::<_, i64>(1)? as u64,
                r.get::<_, i64>(2)? != 0,
            ))
        })?
        .collect::<Result<_, _>>()?;
    let mut s = c.prepare("SELECT id, size FROM blobs ORDER BY id")?;
    out.blobs = s
        .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?
        .collect::<Result<_, _>>()?;
    Ok(out)
}
